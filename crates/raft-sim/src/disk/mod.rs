//! A simulated disk for the write-ahead log, kept in memory, that loses
//! exactly what a power loss may lose.
//!
//! [`SimDisk`] implements [`raftd::wal::Disk`], so the real WAL code runs on
//! it. Clones share one device, and [`SimDisk::crash`] simulates a power loss
//! on it.
//!
//! # Durability model
//!
//! Data and directory changes are durable only after the fsync that POSIX
//! requires for them. Every file and every directory entry has a current
//! version, which calls see, and a durable version, which survives a crash.
//!
//! - File content. [`write`](Disk::write) appends to the current content
//!   and [`truncate`](Disk::truncate) changes its length. Both reach the
//!   durable content at the next [`sync_file`](Disk::sync_file) on a handle
//!   to the file, or [`sync_dir`](Disk::sync_dir) on the file's own path,
//!   which fsyncs it like [`OsDisk`](raftd::wal::OsDisk) does.
//! - Directory entries. [`create_new`](Disk::create_new),
//!   [`create_dir_all`](Disk::create_dir_all) (one entry per directory it
//!   creates), [`rename`](Disk::rename) and
//!   [`remove_file`](Disk::remove_file) change the entries of the parent
//!   directory. The changes reach the durable tree at the next `sync_dir` of
//!   that parent. Syncing a file does not make its entry durable.
//!
//! At a crash:
//!
//! - Each directory keeps a random prefix, possibly empty or whole, of the
//!   operations on its entries since its last sync. An operation is one call
//!   in one directory, so a rename within a directory is atomic. A rename
//!   between directories is one operation in each, and a crash may keep
//!   either half, so the file can end up under both names or under neither.
//! - An entry whose directory did not survive is dropped with it, and a file
//!   that no surviving entry names is gone.
//! - Each surviving file gets its durable content with a random prefix of
//!   its changes since its last sync applied. The last append kept may be cut
//!   at any byte, which is the torn last record of a log. A file whose
//!   creation was not yet durable but survived is treated the same way, so
//!   it starts from empty content unless it was synced.
//! - The model is kinder than a real disk in two ways. A crash damages no
//!   durable byte (no bit flips). It also keeps each file's changes in the
//!   order they were made, so a later page never reaches the disk before an
//!   earlier one.
//! - Afterwards every file and entry is durable, and every handle opened
//!   before the crash fails with an IO error, so that a crashed node's WAL
//!   cannot keep writing.
//!
//! The random choices come from the caller's generator and are drawn in path
//! and file order, so the same generator state gives the same result.
//!
//! # Paths
//!
//! Paths are keys, normalized by dropping `.` components. `/` and the empty
//! path (which `.` normalizes to) are roots that always exist. Paths with a
//! `..` component are rejected with [`io::ErrorKind::InvalidInput`].

mod state;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use raftd::wal::Disk;

use state::{FileId, Node, State, is_root, not_a_directory, not_found};

/// An in-memory disk that loses unsynced writes and directory changes at a
/// simulated crash. See the [module documentation](self) for the model.
///
/// Clones share the same device. It is not `Send`, because the simulator runs
/// on one thread.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

/// A handle to a file on a [`SimDisk`], open for appending.
///
/// It stays valid when the file is renamed or removed, as a file descriptor
/// does, and becomes invalid at the next crash. Use it only with the disk
/// that opened it or a clone of that disk.
#[derive(Debug)]
pub struct SimFile {
    id: FileId,
    /// The disk's crash count when the handle was opened.
    epoch: u64,
    /// The path the handle was opened with, for error messages.
    path: PathBuf,
}

impl SimDisk {
    /// Creates an empty disk, with only the roots `/` and `.`.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Simulates a power loss and restart of the device, drawing every random
    /// choice from `rng`.
    ///
    /// Unsynced directory changes and file content are kept in part, as the
    /// [module documentation](self) describes. Afterwards everything on the
    /// disk is durable, handles opened before the crash fail, and a failure
    /// requested with [`set_fail_next_sync`](SimDisk::set_fail_next_sync) is
    /// cancelled.
    pub fn crash(&self, rng: &mut impl FnMut() -> u64) {
        self.state.borrow_mut().crash(rng);
    }

    /// Makes the next [`sync_file`](Disk::sync_file) fail with an IO error
    /// and make nothing durable, when `fail` is true.
    ///
    /// NOTE: a later successful sync makes all the data durable. On Linux a
    /// failed `fsync` may drop the dirty pages, so a retry could succeed
    /// without them. The WAL refuses further writes after a failed sync, so
    /// it does not depend on this difference.
    pub fn set_fail_next_sync(&self, fail: bool) {
        self.state.borrow_mut().fail_next_sync = fail;
    }

    /// Makes every file's content and every directory entry durable, as
    /// `sync(2)` followed by a clean restart would. Useful to set up a disk
    /// before the part of a test that crashes it.
    pub fn sync_all(&self) {
        self.state.borrow_mut().sync_all();
    }

    /// Returns the bytes of file content that a crash now may lose: the
    /// whole content of files whose entry is not yet durable, and the
    /// unsynced appends of the others. Truncations are not counted.
    pub fn unsynced_bytes(&self) -> u64 {
        self.state.borrow().unsynced_bytes()
    }

    /// Returns the current length of the file at `path`, or `None` when no
    /// file is there.
    pub fn file_len(&self, path: impl AsRef<Path>) -> Option<u64> {
        let path = normalize(path.as_ref()).ok()?;
        let state = self.state.borrow();
        match state.node(&path)? {
            Node::File(id) => Some(state.content(id).len() as u64),
            Node::Dir => None,
        }
    }

    /// Returns whether a file or directory exists at `path`.
    pub fn exists(&self, path: impl AsRef<Path>) -> bool {
        match normalize(path.as_ref()) {
            Ok(path) => self.state.borrow().node(&path).is_some(),
            Err(_) => false,
        }
    }

    #[cfg(test)]
    fn snapshot(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        self.state.borrow().snapshot()
    }

    /// Returns the file of a handle, or an error when a crash has happened
    /// since the handle was opened.
    fn check_handle(&self, state: &State, file: &SimFile) -> io::Result<FileId> {
        if file.epoch != state.epoch {
            return Err(io::Error::other(format!(
                "{}: stale file handle: the simulated disk crashed after the file was opened",
                file.path.display()
            )));
        }
        if !state.has_file(file.id) {
            return Err(io::Error::other(format!(
                "{}: file handle was opened on another simulated disk",
                file.path.display()
            )));
        }
        Ok(file.id)
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("SimDisk")
            .field("crashes", &state.epoch)
            .field("unsynced_bytes", &state.unsynced_bytes())
            .finish()
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut state = self.state.borrow_mut();
        let mut ancestors: Vec<&Path> = path
            .ancestors()
            .filter(|ancestor| !is_root(ancestor))
            .collect();
        ancestors.reverse();
        for ancestor in ancestors {
            match state.node(ancestor) {
                Some(Node::Dir) => {}
                // `fs::create_dir_all` fails like this when a file is in the
                // way: at the last component, `mkdir` returns EEXIST.
                Some(Node::File(_)) if ancestor == path => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{}: file exists", path.display()),
                    ));
                }
                Some(Node::File(_)) => return Err(not_a_directory(ancestor)),
                None => state.create_dir(ancestor),
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let path = normalize(path)?;
        let state = self.state.borrow();
        match state.node(&path) {
            Some(Node::Dir) => Ok(state.children(&path)),
            Some(Node::File(_)) => Err(not_a_directory(&path)),
            None => Err(not_found(&path)),
        }
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let path = normalize(path)?;
        let state = self.state.borrow();
        let id = existing_file(&state, &path)?;
        Ok(state.content(id).to_vec())
    }

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let path = normalize(path)?;
        let mut state = self.state.borrow_mut();
        if state.node(&path).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: file exists", path.display()),
            ));
        }
        state.check_parent(&path)?;
        let id = state.create_file(&path);
        Ok(SimFile {
            id,
            epoch: state.epoch,
            path,
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<SimFile> {
        let path = normalize(path)?;
        let state = self.state.borrow();
        let id = existing_file(&state, &path)?;
        Ok(SimFile {
            id,
            epoch: state.epoch,
            path,
        })
    }

    fn write(&self, file: &mut SimFile, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let id = self.check_handle(&state, file)?;
        state.append(id, data);
        Ok(())
    }

    fn sync_file(&self, file: &mut SimFile) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let id = self.check_handle(&state, file)?;
        if state.fail_next_sync {
            state.fail_next_sync = false;
            return Err(io::Error::other(format!(
                "{}: injected fsync failure",
                file.path.display()
            )));
        }
        state.sync_file(id);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut state = self.state.borrow_mut();
        match state.node(&path) {
            Some(Node::Dir) => state.sync_dir(&path),
            // `OsDisk` opens the path and fsyncs it, which works on a file.
            Some(Node::File(id)) => state.sync_file(id),
            None => return Err(not_found(&path)),
        }
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let path = normalize(path)?;
        let mut state = self.state.borrow_mut();
        let id = existing_file(&state, &path)?;
        let len = usize::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: length {len} does not fit in memory", path.display()),
            )
        })?;
        state.set_len(id, len);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = normalize(from)?;
        let to = normalize(to)?;
        let mut state = self.state.borrow_mut();
        let id = match state.node(&from) {
            Some(Node::File(id)) => id,
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{}: SimDisk cannot rename a directory", from.display()),
                ));
            }
            None => return Err(not_found(&from)),
        };
        if from == to {
            return Ok(());
        }
        if state.node(&to) == Some(Node::Dir) {
            return Err(is_a_directory(&to));
        }
        state.check_parent(&to)?;
        state.rename_file(&from, &to, id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut state = self.state.borrow_mut();
        existing_file(&state, &path)?;
        state.remove_entry(&path);
        Ok(())
    }
}

/// Drops `.` components, so that `./a/./b` and `a/b` are the same key.
fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: SimDisk does not resolve `..`", path.display()),
                ));
            }
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => {
                normalized.push(component);
            }
        }
    }
    Ok(normalized)
}

/// Returns the file at `path`, or the error that opening it would return.
fn existing_file(state: &State, path: &Path) -> io::Result<FileId> {
    match state.node(path) {
        Some(Node::File(id)) => Ok(id),
        Some(Node::Dir) => Err(is_a_directory(path)),
        None => Err(not_found(path)),
    }
}

fn is_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("{}: is a directory", path.display()),
    )
}

//! The simulated device: the directory tree and file contents, each in a
//! current and a durable version, and what a crash keeps of the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::mem;
use std::path::{Path, PathBuf};

/// Identifies a file's data (an inode), apart from the names it has.
pub(super) type FileId = u64;

/// The target of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Node {
    Dir,
    File(FileId),
}

/// One change to a directory entry: after it, `path` names `node`, or
/// nothing when `node` is `None`.
#[derive(Clone, Debug)]
struct EntryChange {
    path: PathBuf,
    node: Option<Node>,
}

/// The changes one call made in one directory. A crash keeps all of them or
/// none, so that a rename within a directory is atomic.
type DirOperation = Vec<EntryChange>;

/// A change to a file's content since its last sync.
#[derive(Clone, Debug)]
enum ContentChange {
    Append(Vec<u8>),
    SetLen(usize),
}

impl ContentChange {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            ContentChange::Append(data) => content.extend_from_slice(data),
            ContentChange::SetLen(len) => content.resize(*len, 0),
        }
    }
}

/// A file's data.
#[derive(Clone, Debug, Default)]
struct FileData {
    /// The content as of the last sync.
    durable: Vec<u8>,
    /// The content that reads return: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Changes since the last sync, oldest first.
    pending: Vec<ContentChange>,
    /// Length of the prefix of `current` that no pending change touched,
    /// so that it equals the same prefix of `durable`.
    stable_len: usize,
}

impl FileData {
    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.current.extend_from_slice(data);
        self.pending.push(ContentChange::Append(data.to_vec()));
    }

    fn set_len(&mut self, len: usize) {
        self.current.resize(len, 0);
        self.stable_len = self.stable_len.min(len);
        self.pending.push(ContentChange::SetLen(len));
    }

    fn sync(&mut self) {
        self.durable.clone_from(&self.current);
        self.pending.clear();
        self.stable_len = self.current.len();
    }

    /// Replaces the content with what a power loss leaves: the durable
    /// content with a random prefix of the pending changes applied, where
    /// the last append applied may be cut short.
    fn crash(&mut self, rng: &mut dyn FnMut() -> u64) {
        let count = self.pending.len();
        if count > 0 {
            // One crash in four keeps no change and one keeps all of them, so
            // that both ends are common. Otherwise the cut falls inside a
            // random change, which tears an append.
            let (kept_changes, torn) = match rng() % 4 {
                0 => (0, None),
                1 => (count, None),
                _ => {
                    let position = (rng() % count as u64) as usize;
                    (position, Some(&self.pending[position]))
                }
            };
            let mut content = mem::take(&mut self.durable);
            for change in &self.pending[..kept_changes] {
                change.apply(&mut content);
            }
            if let Some(ContentChange::Append(data)) = torn {
                let cut = (rng() % (data.len() as u64 + 1)) as usize;
                content.extend_from_slice(&data[..cut]);
            }
            self.durable = content;
        }
        self.current.clone_from(&self.durable);
        self.pending.clear();
        self.stable_len = self.current.len();
    }
}

/// The whole simulated device.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The directory tree as calls see it. Roots (`/` and the empty path,
    /// which `.` normalizes to) always exist and are not listed.
    entries: BTreeMap<PathBuf, Node>,
    /// The directory tree as of the last sync of each directory.
    durable_entries: BTreeMap<PathBuf, Node>,
    /// Per directory, the operations on its entries since its last sync,
    /// oldest first.
    pending_dirs: BTreeMap<PathBuf, Vec<DirOperation>>,
    /// Every file that an entry, durable or current, or an open handle may
    /// refer to. A crash drops the files that no entry names.
    files: BTreeMap<FileId, FileData>,
    next_file_id: FileId,
    /// Incremented by every crash, so that handles opened before it fail.
    pub epoch: u64,
    pub fail_next_sync: bool,
}

impl State {
    /// Returns what `path` names, with roots as directories.
    pub fn node(&self, path: &Path) -> Option<Node> {
        if is_root(path) {
            return Some(Node::Dir);
        }
        self.entries.get(path).copied()
    }

    /// Fails unless the parent of `path` is an existing directory.
    pub fn check_parent(&self, path: &Path) -> io::Result<()> {
        let parent = path.parent().unwrap_or(Path::new(""));
        match self.node(parent) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(not_a_directory(parent)),
            None => Err(not_found(parent)),
        }
    }

    pub fn create_dir(&mut self, path: &Path) {
        self.record(vec![EntryChange {
            path: path.to_path_buf(),
            node: Some(Node::Dir),
        }]);
    }

    pub fn create_file(&mut self, path: &Path) -> FileId {
        let id = self.next_file_id;
        self.next_file_id += 1;
        self.files.insert(id, FileData::default());
        self.record(vec![EntryChange {
            path: path.to_path_buf(),
            node: Some(Node::File(id)),
        }]);
        id
    }

    /// Moves the file `id` from `from` to `to`, replacing what `to` named.
    pub fn rename_file(&mut self, from: &Path, to: &Path, id: FileId) {
        self.record(vec![
            EntryChange {
                path: from.to_path_buf(),
                node: None,
            },
            EntryChange {
                path: to.to_path_buf(),
                node: Some(Node::File(id)),
            },
        ]);
    }

    pub fn remove_entry(&mut self, path: &Path) {
        self.record(vec![EntryChange {
            path: path.to_path_buf(),
            node: None,
        }]);
    }

    /// Returns the names in the directory `dir`.
    pub fn children(&self, dir: &Path) -> Vec<OsString> {
        self.entries
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name().map(|name| name.to_os_string()))
            .collect()
    }

    pub fn content(&self, id: FileId) -> &[u8] {
        &self.file(id).current
    }

    pub fn append(&mut self, id: FileId, data: &[u8]) {
        self.file_mut(id).append(data);
    }

    pub fn set_len(&mut self, id: FileId, len: usize) {
        self.file_mut(id).set_len(len);
    }

    pub fn sync_file(&mut self, id: FileId) {
        self.file_mut(id).sync();
    }

    /// Makes the entries of the directory `dir` durable.
    pub fn sync_dir(&mut self, dir: &Path) {
        let operations = self.pending_dirs.remove(dir).unwrap_or_default();
        for operation in operations {
            apply_operation(&mut self.durable_entries, operation);
        }
    }

    /// Makes every entry and every file's content durable.
    pub fn sync_all(&mut self) {
        self.pending_dirs.clear();
        self.durable_entries.clone_from(&self.entries);
        for file in self.files.values_mut() {
            file.sync();
        }
    }

    /// Returns whether the file `id` exists.
    pub fn has_file(&self, id: FileId) -> bool {
        self.files.contains_key(&id)
    }

    /// Returns the bytes of file content that a crash now may lose: all of a
    /// file that no durable entry names, and the unsynced rest of the others.
    pub fn unsynced_bytes(&self) -> u64 {
        let durable_ids = file_ids(&self.durable_entries);
        file_ids(&self.entries)
            .into_iter()
            .map(|id| {
                let file = self.file(id);
                if durable_ids.contains(&id) {
                    (file.current.len() - file.stable_len) as u64
                } else {
                    file.current.len() as u64
                }
            })
            .sum()
    }

    /// Simulates a power loss, drawing every random choice from `rng`.
    ///
    /// Each directory keeps a random prefix of its operations since its last
    /// sync. Entries whose parent directory did not survive are dropped, and
    /// so are the files that no entry names. Each remaining file keeps its
    /// durable content plus a random prefix of its changes since its last
    /// sync. Then the current state is the durable one, and `epoch` moves on.
    pub fn crash(&mut self, rng: &mut dyn FnMut() -> u64) {
        self.epoch += 1;
        self.fail_next_sync = false;

        for (_dir, operations) in mem::take(&mut self.pending_dirs) {
            let kept_operations = (rng() % (operations.len() as u64 + 1)) as usize;
            for operation in operations.into_iter().take(kept_operations) {
                apply_operation(&mut self.durable_entries, operation);
            }
        }
        remove_orphans(&mut self.durable_entries);
        self.entries.clone_from(&self.durable_entries);

        let live = file_ids(&self.entries);
        self.files.retain(|id, _| live.contains(id));
        for file in self.files.values_mut() {
            file.crash(rng);
        }
    }

    /// Returns every file path with its content, for comparing two states.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        self.entries
            .iter()
            .map(|(path, node)| match node {
                Node::Dir => (path.clone(), None),
                Node::File(id) => (path.clone(), Some(self.file(*id).current.clone())),
            })
            .collect()
    }

    /// Applies `changes` to the current tree and appends them to the pending
    /// operations of their directories, one operation per directory.
    fn record(&mut self, changes: Vec<EntryChange>) {
        let mut by_dir: BTreeMap<PathBuf, DirOperation> = BTreeMap::new();
        for change in changes {
            apply_change(&mut self.entries, &change);
            let dir = change.path.parent().unwrap_or(Path::new("")).to_path_buf();
            by_dir.entry(dir).or_default().push(change);
        }
        for (dir, operation) in by_dir {
            self.pending_dirs.entry(dir).or_default().push(operation);
        }
    }

    fn file(&self, id: FileId) -> &FileData {
        self.files
            .get(&id)
            .expect("callers check that the file exists")
    }

    fn file_mut(&mut self, id: FileId) -> &mut FileData {
        self.files
            .get_mut(&id)
            .expect("callers check that the file exists")
    }
}

/// Returns whether `path`, normalized, is a root: `/` or the empty path.
pub(super) fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

pub(super) fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

pub(super) fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{}: not a directory", path.display()),
    )
}

fn apply_operation(entries: &mut BTreeMap<PathBuf, Node>, operation: DirOperation) {
    for change in &operation {
        apply_change(entries, change);
    }
}

fn apply_change(entries: &mut BTreeMap<PathBuf, Node>, change: &EntryChange) {
    match change.node {
        Some(node) => entries.insert(change.path.clone(), node),
        None => entries.remove(&change.path),
    };
}

/// Removes the entries whose parent is not a directory in `entries`, as
/// after a crash that kept a file's entry but not its directory's.
fn remove_orphans(entries: &mut BTreeMap<PathBuf, Node>) {
    // Paths sort component by component, so every directory comes before
    // the entries inside it, and one pass settles each parent first.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut orphans = Vec::new();
    for (path, node) in entries.iter() {
        let parent = path.parent().unwrap_or(Path::new(""));
        if is_root(parent) || dirs.contains(parent) {
            if *node == Node::Dir {
                dirs.insert(path.clone());
            }
        } else {
            orphans.push(path.clone());
        }
    }
    for path in orphans {
        entries.remove(&path);
    }
}

fn file_ids(entries: &BTreeMap<PathBuf, Node>) -> BTreeSet<FileId> {
    entries
        .values()
        .filter_map(|node| match node {
            Node::File(id) => Some(*id),
            Node::Dir => None,
        })
        .collect()
}

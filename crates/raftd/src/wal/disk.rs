//! The file-system calls the WAL makes, behind a trait so that tests can
//! substitute a disk that loses unsynced writes at a simulated crash.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The file-system operations the WAL needs.
///
/// The WAL calls nothing else, so an implementation that keeps files in
/// memory and drops unsynced data at a simulated crash exercises every path
/// that recovery can see. Methods take `&self` so that a simulated disk can
/// be shared with the test that crashes it, which needs interior mutability.
pub trait Disk {
    /// A file open for appending.
    type File;

    /// Creates `path` and any missing parent directories.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Returns the names of the entries of the directory `path`, in any order.
    ///
    /// Fails with [`io::ErrorKind::NotFound`] when the directory does not
    /// exist.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// Reads the whole file at `path`.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates the file `path` and opens it for appending.
    ///
    /// Fails with [`io::ErrorKind::AlreadyExists`] when the file exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;

    /// Opens the existing file `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Self::File>;

    /// Appends all of `data` to `file`. The data is durable only after
    /// [`sync_file`](Disk::sync_file).
    fn write(&self, file: &mut Self::File, data: &[u8]) -> io::Result<()>;

    /// Makes the data written to `file` durable, along with the file size
    /// (`fdatasync`).
    fn sync_file(&self, file: &mut Self::File) -> io::Result<()>;

    /// Makes the entries of the directory `path` durable: files created,
    /// renamed or removed in it.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Shortens the file `path` to `len` bytes. The new length is durable
    /// after the next [`sync_file`](Disk::sync_file) on a handle to it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// The real disk, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsDisk;

impl Disk for OsDisk {
    type File = File;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name());
        }
        Ok(names)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().append(true).create_new(true).open(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().append(true).open(path)
    }

    fn write(&self, file: &mut File, data: &[u8]) -> io::Result<()> {
        file.write_all(data)
    }

    fn sync_file(&self, file: &mut File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced.
        File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

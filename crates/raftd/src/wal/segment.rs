//! Segment files: their names and the segment the WAL appends to.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::disk::Disk;
use super::error::{WalError, io_error};
use super::format;

/// Digits of the zero-padded sequence number in a segment file name, enough
/// for every `u64`.
const SEQUENCE_DIGITS: usize = 20;

const EXTENSION: &str = ".wal";

/// Returns the file name of segment `sequence`, such as
/// `00000000000000000001.wal`.
pub(crate) fn file_name(sequence: u64) -> String {
    format!("{sequence:0width$}{EXTENSION}", width = SEQUENCE_DIGITS)
}

/// Parses a segment file name into its sequence number. Returns `None` for
/// any other name, so that other files in the directory are ignored.
pub(crate) fn parse_file_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(EXTENSION)?;
    if digits.len() != SEQUENCE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment the WAL appends to.
pub(crate) struct ActiveSegment<F> {
    pub sequence: u64,
    pub path: PathBuf,
    pub file: F,
    /// Bytes in the file, including writes not yet synced.
    pub len: u64,
}

impl<F> ActiveSegment<F> {
    /// Creates segment `sequence` in `dir` and writes its header record,
    /// without syncing the file or the directory.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the file exists already or a call fails.
    pub fn create<D: Disk<File = F>>(
        disk: &D,
        dir: &Path,
        sequence: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<Self, WalError> {
        let path = dir.join(file_name(sequence));
        let file = disk
            .create_new(&path)
            .map_err(io_error("create segment", &path))?;
        let mut segment = ActiveSegment {
            sequence,
            path,
            file,
            len: 0,
        };
        segment.write_header(disk, buffer)?;
        Ok(segment)
    }

    /// Opens the existing segment `sequence` in `dir` for appending after
    /// its first `len` bytes, which must be the whole file. Writes a header
    /// record when the file is empty.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when a call fails.
    pub fn open<D: Disk<File = F>>(
        disk: &D,
        dir: &Path,
        sequence: u64,
        len: u64,
        buffer: &mut Vec<u8>,
    ) -> Result<Self, WalError> {
        let path = dir.join(file_name(sequence));
        let file = disk
            .open_append(&path)
            .map_err(io_error("open segment", &path))?;
        let mut segment = ActiveSegment {
            sequence,
            path,
            file,
            len,
        };
        if len == 0 {
            segment.write_header(disk, buffer)?;
        }
        Ok(segment)
    }

    /// Appends `data` to the file with one write call.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when the write fails. Part of `data` may be in the
    /// file then.
    pub fn write<D: Disk<File = F>>(&mut self, disk: &D, data: &[u8]) -> Result<(), WalError> {
        disk.write(&mut self.file, data)
            .map_err(io_error("write segment", &self.path))?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Returns whether the segment contains any record after its header.
    pub fn has_records(&self) -> bool {
        self.len > format::SEGMENT_HEADER_RECORD_LEN
    }

    fn write_header<D: Disk<File = F>>(
        &mut self,
        disk: &D,
        buffer: &mut Vec<u8>,
    ) -> Result<(), WalError> {
        buffer.clear();
        format::encode_segment_header(buffer, self.sequence);
        self.write(disk, buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trips() {
        for sequence in [0, 1, 42, u64::MAX] {
            let name = file_name(sequence);
            assert_eq!(name.len(), SEQUENCE_DIGITS + EXTENSION.len());
            assert_eq!(parse_file_name(OsStr::new(&name)), Some(sequence));
        }
        assert_eq!(file_name(1), "00000000000000000001.wal");
    }

    #[test]
    fn parse_file_name_ignores_other_files() {
        for name in [
            "1.wal",
            "00000000000000000001.wal.tmp",
            "0000000000000000000a.wal",
            "+0000000000000000001.wal",
            "snapshot",
            "99999999999999999999.wal",
        ] {
            assert_eq!(parse_file_name(OsStr::new(name)), None, "{name}");
        }
    }
}

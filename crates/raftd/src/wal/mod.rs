//! The write-ahead log (WAL): the durable copy of a node's log entries and
//! hard state.
//!
//! # Files
//!
//! The WAL is a directory of segment files named by a 20-digit zero-padded
//! sequence number, such as `00000000000000000001.wal`. Sequence numbers are
//! consecutive, and other files in the directory are ignored. Records are
//! appended to the segment with the highest number. When a [`Wal::sync`]
//! finds that this segment contains records and has reached
//! [`WalOptions::segment_size`] bytes, it syncs the segment and then creates
//! the next one. So every segment but the last was completely synced before
//! its successor existed, and a segment can exceed `segment_size` by the
//! bytes appended between two syncs.
//!
//! # Records
//!
//! A segment is a sequence of records, each laid out as
//!
//! | bytes | field |
//! |-------|-------|
//! | 4     | payload length `n` |
//! | 4     | CRC-32C (Castagnoli) of the type byte and the payload |
//! | 1     | record type |
//! | `n`   | payload |
//!
//! Integers are little-endian. The record types and their payloads are:
//!
//! - 1, segment header, the first record of every segment: the magic
//!   `RAFTDWAL` (8 bytes), the format version (u32, currently 1) and the
//!   segment's sequence number (u64, the same as in the file name).
//! - 2, entry: term (u64), index (u64), kind (u8: 0 normal, 1 no-op), then
//!   the entry data, which fills the rest of the payload.
//! - 3, hard state: term (u64), vote tag (u8: 0 none, 1 some), vote (u64, 0
//!   when there is none) and commit index (u64).
//!
//! Type 0 is never written. A later format version must keep the record
//! layout and start the segment header payload with the magic and the
//! version, so that this build rejects its segments with
//! [`WalError::UnsupportedVersion`] rather than as corrupt.
//!
//! # Recovery
//!
//! [`Wal::open`] replays the segments in sequence order.
//!
//! - An entry record at index `i` removes the entries from `i` on and takes
//!   their place, so a suffix that a new leader replaced stays replaced
//!   across restarts.
//! - The last hard state record wins. Without one, the hard state is the
//!   default.
//! - A torn tail is a record in the last segment that is cut short, zero
//!   filled or fails its checksum, with no valid record starting anywhere
//!   after it. Recovery truncates the file at that record's offset, logs a
//!   warning and returns it in [`Recovered::truncated_tail`].
//! - Every other defect is a [`WalError::Corrupt`]: a damaged record followed
//!   by a valid one, a damaged record in any segment but the last, an
//!   unknown record type or entry kind, a payload of the wrong length, a
//!   missing or misplaced segment header, an entry index that is 0 or skips
//!   past the last index plus one, and a missing segment. Recovery never
//!   skips a record.
//!
//! # Durability
//!
//! [`Wal::append`] encodes its records into one buffer and writes it with one
//! write call, without fsync. [`Wal::sync`] fsyncs (`fdatasync`) the last
//! segment, rolls to a new segment if needed, and fsyncs the directory when
//! a segment or the directory itself was created since the previous sync.
//! After a failed write or fsync the WAL rejects further writes with
//! [`WalError::Poisoned`]. The kernel may have dropped the unwritten pages
//! by then, so a retried fsync could succeed without the data on disk.
//!
//! # File access
//!
//! Every file access goes through the [`Disk`] trait, so that tests can use a
//! simulated disk. [`Wal`] is generic over it, defaulting to [`OsDisk`],
//! rather than holding a `Box<dyn Disk>`: the trait has an associated file
//! type, and static dispatch costs nothing on the write path.

mod disk;
mod error;
mod format;
mod recovery;
mod segment;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use raft_core::{Entry, HardState, LogIndex};

pub use disk::{Disk, OsDisk};
pub use error::{CorruptReason, FrameDamage, WalError};
pub use format::{FORMAT_VERSION, RecordType};
pub use recovery::{Recovered, TornTail};

use error::io_error;
use segment::ActiveSegment;

/// The default [`WalOptions::segment_size`]: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// The sequence number of the first segment of a new WAL.
const FIRST_SEQUENCE: u64 = 1;

/// Capacity in bytes that the encoding buffer keeps after an append, so that
/// one large append does not pin its memory for the life of the WAL.
const RETAINED_BUFFER_CAPACITY: usize = 1024 * 1024;

/// Settings of a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size in bytes at which the sync after an append starts a new segment.
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// Directories whose entries changed since the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DirSync {
    None,
    /// A segment was created in the WAL directory.
    Dir,
}

/// Creates `dir` and every missing ancestor, and fsyncs the parent of each
/// directory it created, so that a crash cannot take the new tree, and the
/// segments synced inside it later, away.
fn create_dir_durably<D: Disk>(disk: &D, dir: &Path) -> Result<(), WalError> {
    let mut created = Vec::new();
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        match disk.list_dir(ancestor) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => created.push(ancestor),
            _ => break,
        }
    }
    disk.create_dir_all(dir)
        .map_err(io_error("create directory", dir))?;
    for new_dir in created.iter().rev() {
        let parent = match new_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        disk.sync_dir(parent)
            .map_err(io_error("fsync directory", parent))?;
    }
    Ok(())
}

/// A segmented write-ahead log of entries and hard states.
///
/// `D` is the file system, [`OsDisk`] outside tests.
pub struct Wal<D: Disk = OsDisk> {
    disk: D,
    dir: PathBuf,
    options: WalOptions,
    segment: ActiveSegment<D::File>,
    last_index: LogIndex,
    /// The encoding buffer, reused across appends.
    buffer: Vec<u8>,
    /// Whether the active segment has writes or a truncation not yet synced.
    unsynced: bool,
    dir_sync: DirSync,
    /// Set after a failed write or fsync.
    poisoned: bool,
}

impl<D: Disk> Wal<D> {
    /// Opens the WAL in `dir`, creating the directory if it does not exist,
    /// and recovers its contents.
    ///
    /// A torn tail of the last segment is truncated, and a segment header is
    /// written to a new or empty last segment. Neither is synced before the
    /// next [`sync`](Wal::sync).
    ///
    /// # Errors
    ///
    /// - [`WalError::Corrupt`] when the log is damaged other than by a torn
    ///   tail. The message states what the operator should do.
    /// - [`WalError::UnsupportedVersion`] for a segment of another format
    ///   version.
    /// - [`WalError::Io`] when a file-system call fails.
    pub fn open(disk: D, dir: &Path, options: WalOptions) -> Result<(Self, Recovered), WalError> {
        let mut dir_sync = DirSync::None;
        let names = match disk.list_dir(dir) {
            Ok(names) => names,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                create_dir_durably(&disk, dir)?;
                Vec::new()
            }
            Err(error) => return Err(io_error("list directory", dir)(error)),
        };

        let (recovered, last_segment) = recovery::recover(&disk, dir, &names)?;

        let mut buffer = Vec::new();
        let (segment, unsynced) = match last_segment {
            Some(last) => {
                let segment =
                    ActiveSegment::open(&disk, dir, last.sequence, last.len, &mut buffer)?;
                // A truncated tail or a header written just now is not durable.
                let unsynced = recovered.truncated_tail.is_some() || last.len == 0;
                (segment, unsynced)
            }
            None => {
                dir_sync = dir_sync.max(DirSync::Dir);
                let segment = ActiveSegment::create(&disk, dir, FIRST_SEQUENCE, &mut buffer)?;
                (segment, true)
            }
        };

        let last_index = LogIndex(recovered.entries.len() as u64);
        tracing::debug!(
            dir = %dir.display(),
            segment = segment.sequence,
            %last_index,
            "opened WAL"
        );
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            options,
            segment,
            last_index,
            buffer,
            unsynced,
            dir_sync,
            poisoned: false,
        };
        Ok((wal, recovered))
    }

    /// Writes the records of one `Ready`: `entries`, then `hard_state`, with
    /// one write call and no fsync.
    ///
    /// An entry at index `i` replaces every stored entry at `i` and above, in
    /// memory now and at recovery. The records are durable after the next
    /// [`sync`](Wal::sync).
    ///
    /// # Errors
    ///
    /// Nothing is written when
    /// - the first entry's index is 0 or above [`last_index`](Wal::last_index)
    ///   plus one ([`WalError::AppendOutOfRange`]),
    /// - the entries' indexes are not consecutive
    ///   ([`WalError::AppendNotContiguous`]), or
    /// - an entry does not fit in a record ([`WalError::RecordTooLarge`]).
    ///
    /// When the write fails, the error is [`WalError::Io`] and the WAL is
    /// poisoned: this and every later call returns [`WalError::Poisoned`].
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        self.check_not_poisoned()?;
        self.check_indexes(entries)?;

        self.buffer.clear();
        for entry in entries {
            format::encode_entry(&mut self.buffer, entry)?;
        }
        if let Some(hard_state) = hard_state {
            format::encode_hard_state(&mut self.buffer, hard_state);
        }
        if self.buffer.is_empty() {
            return Ok(());
        }

        let written = self.segment.write(&self.disk, &self.buffer);
        self.buffer.clear();
        self.buffer.shrink_to(RETAINED_BUFFER_CAPACITY);
        if let Err(error) = written {
            self.poisoned = true;
            return Err(error);
        }
        self.unsynced = true;
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        Ok(())
    }

    /// Makes everything appended since the last sync durable with one fsync
    /// of the active segment (group commit).
    ///
    /// Then, if the active segment contains records and has reached
    /// [`WalOptions::segment_size`], creates the next segment. Last, fsyncs
    /// the WAL directory if a segment was created since the previous sync,
    /// and its parent if [`open`](Wal::open) created the directory.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] when a file-system call fails. The WAL is poisoned
    /// then: this and every later call returns [`WalError::Poisoned`].
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_not_poisoned()?;
        let result = self.sync_and_roll();
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Returns the index of the last entry, or 0 when the log is empty.
    pub fn last_index(&self) -> LogIndex {
        self.last_index
    }

    fn sync_and_roll(&mut self) -> Result<(), WalError> {
        if self.unsynced {
            self.disk
                .sync_file(&mut self.segment.file)
                .map_err(io_error("fsync segment", &self.segment.path))?;
            self.unsynced = false;
        }

        if self.segment.has_records() && self.segment.len >= self.options.segment_size {
            // The active segment was synced above, so it is complete on disk
            // before its successor exists.
            let sequence = self.segment.sequence + 1;
            self.segment =
                ActiveSegment::create(&self.disk, &self.dir, sequence, &mut self.buffer)?;
            self.unsynced = true;
            self.dir_sync = self.dir_sync.max(DirSync::Dir);
        }

        if self.dir_sync != DirSync::None {
            self.disk
                .sync_dir(&self.dir)
                .map_err(io_error("fsync directory", &self.dir))?;
            self.dir_sync = DirSync::None;
        }
        Ok(())
    }

    fn check_not_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        Ok(())
    }

    fn check_indexes(&self, entries: &[Entry]) -> Result<(), WalError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let next = self.last_index.next();
        if first.index.0 == 0 || first.index > next {
            return Err(WalError::AppendOutOfRange {
                index: first.index,
                next,
            });
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index.next() {
                return Err(WalError::AppendNotContiguous {
                    index: pair[1].index,
                    previous: pair[0].index,
                });
            }
        }
        Ok(())
    }
}

impl<D: Disk> fmt::Debug for Wal<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("segment", &self.segment.path)
            .field("segment_len", &self.segment.len)
            .field("last_index", &self.last_index)
            .field("unsynced", &self.unsynced)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

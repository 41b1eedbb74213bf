//! Replay of the segments when the WAL opens, with truncation of a torn tail.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use raft_core::{Entry, HardState, LogIndex};

use super::disk::Disk;
use super::error::{CorruptReason, FrameDamage, WalError, io_error};
use super::format::{self, DecodeError, Record};
use super::segment;

/// The log and hard state that [`Wal::open`](super::Wal::open) recovered from
/// the segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written, or the default when none was.
    pub hard_state: HardState,
    /// The log, contiguous from index 1, with every replaced suffix removed.
    pub entries: Vec<Entry>,
    /// The torn tail cut off the last segment, if it had one.
    pub truncated_tail: Option<TornTail>,
}

/// An incomplete or damaged tail of the last segment, which recovery
/// truncated.
///
/// A crash during a write that was never synced leaves such a tail, and then
/// no entry in it was acknowledged. Recovery cannot tell that apart from a
/// damaged final record that was synced, which is dropped as well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// The offset of the first record that failed to decode, and the new
    /// length of the file.
    pub offset: u64,
    /// The number of bytes removed from the end of the file.
    pub dropped_bytes: u64,
}

/// The segment the WAL continues to append to after recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LastSegment {
    pub sequence: u64,
    /// The file's length after any torn tail was truncated.
    pub len: u64,
}

/// Replays the segments among the file names `names` of `dir` in sequence
/// order, and truncates a torn tail of the last segment through `disk`.
///
/// # Errors
///
/// [`WalError::Corrupt`] for damage that is not a torn tail,
/// [`WalError::UnsupportedVersion`] for a segment of another format version,
/// and [`WalError::Io`] when reading or truncating a file fails.
pub(crate) fn recover<D: Disk>(
    disk: &D,
    dir: &Path,
    names: &[OsString],
) -> Result<(Recovered, Option<LastSegment>), WalError> {
    let mut sequences: Vec<u64> = names
        .iter()
        .filter_map(|name| segment::parse_file_name(name))
        .collect();
    sequences.sort_unstable();

    let mut replay = Replay::default();
    let mut truncated_tail = None;
    let mut last_segment = None;
    for (position, &sequence) in sequences.iter().enumerate() {
        let path = dir.join(segment::file_name(sequence));
        if let Some(&previous) = position.checked_sub(1).map(|p| &sequences[p]) {
            if sequence != previous + 1 {
                return Err(WalError::Corrupt {
                    file: path,
                    offset: 0,
                    reason: CorruptReason::MissingSegment {
                        missing: previous + 1,
                    },
                });
            }
        }

        let bytes = disk
            .read_file(&path)
            .map_err(io_error("read segment", &path))?;
        let is_last = position + 1 == sequences.len();
        let end = replay
            .replay_segment(&bytes, sequence, is_last)
            .map_err(|error| error.into_wal_error(&path))?;

        let len = match end {
            SegmentEnd::Complete => bytes.len() as u64,
            SegmentEnd::Torn { offset } => {
                let tail = truncate_torn_tail(disk, path, offset, bytes.len() as u64)?;
                truncated_tail = Some(tail);
                offset
            }
        };
        last_segment = Some(LastSegment { sequence, len });
    }

    let recovered = Recovered {
        hard_state: replay.hard_state,
        entries: replay.entries,
        truncated_tail,
    };
    Ok((recovered, last_segment))
}

fn truncate_torn_tail<D: Disk>(
    disk: &D,
    file: PathBuf,
    offset: u64,
    file_len: u64,
) -> Result<TornTail, WalError> {
    let dropped_bytes = file_len - offset;
    tracing::warn!(
        file = %file.display(),
        offset,
        dropped_bytes,
        "truncating torn WAL tail"
    );
    disk.truncate(&file, offset)
        .map_err(io_error("truncate segment", &file))?;
    Ok(TornTail {
        file,
        offset,
        dropped_bytes,
    })
}

/// The outcome of replaying one segment.
#[derive(Debug, PartialEq, Eq)]
enum SegmentEnd {
    /// Every byte belongs to a valid record.
    Complete,
    /// The records end at `offset`, followed by a torn tail.
    Torn { offset: u64 },
}

/// A segment that recovery rejects, before the file path is attached.
struct SegmentError {
    offset: u64,
    error: DecodeError,
}

impl SegmentError {
    fn corrupt(offset: usize, reason: CorruptReason) -> Self {
        SegmentError {
            offset: offset as u64,
            error: DecodeError::Corrupt(reason),
        }
    }

    fn into_wal_error(self, file: &Path) -> WalError {
        match self.error {
            DecodeError::Corrupt(reason) => WalError::Corrupt {
                file: file.to_path_buf(),
                offset: self.offset,
                reason,
            },
            DecodeError::UnsupportedVersion(version) => WalError::UnsupportedVersion {
                file: file.to_path_buf(),
                version,
                supported: format::FORMAT_VERSION,
            },
        }
    }
}

/// The state rebuilt from the records replayed so far.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    /// `entries[k]` has index `k + 1`.
    entries: Vec<Entry>,
}

impl Replay {
    fn replay_segment(
        &mut self,
        bytes: &[u8],
        sequence: u64,
        is_last: bool,
    ) -> Result<SegmentEnd, SegmentError> {
        // An empty last segment was created but its header never reached
        // the disk. Any other segment was synced before the next one was
        // created, so it must hold a header.
        if bytes.is_empty() && !is_last {
            return Err(SegmentError::corrupt(
                0,
                CorruptReason::MissingSegmentHeader,
            ));
        }

        let mut offset = 0;
        while offset < bytes.len() {
            let frame = match format::read_frame(&bytes[offset..]) {
                Ok(frame) => frame,
                Err(damage) => return classify_damage(bytes, offset, damage, is_last),
            };
            let record = format::decode_record(&frame).map_err(|error| SegmentError {
                offset: offset as u64,
                error,
            })?;
            self.apply(record, offset == 0, sequence)
                .map_err(|reason| SegmentError::corrupt(offset, reason))?;
            offset += frame.encoded_len();
        }
        Ok(SegmentEnd::Complete)
    }

    fn apply(
        &mut self,
        record: Record,
        at_start: bool,
        sequence: u64,
    ) -> Result<(), CorruptReason> {
        match record {
            Record::SegmentHeader { sequence: found } => {
                if !at_start {
                    return Err(CorruptReason::UnexpectedSegmentHeader);
                }
                if found != sequence {
                    return Err(CorruptReason::SequenceMismatch {
                        expected: sequence,
                        found,
                    });
                }
            }
            _ if at_start => return Err(CorruptReason::MissingSegmentHeader),
            Record::Entry(entry) => {
                // An entry at index i replaces the stored entries from i on,
                // so that a suffix replaced by a new leader stays replaced.
                let last = LogIndex(self.entries.len() as u64);
                if entry.index.0 == 0 || entry.index > last.next() {
                    return Err(CorruptReason::IndexGap {
                        index: entry.index,
                        last,
                    });
                }
                self.entries.truncate((entry.index.0 - 1) as usize);
                self.entries.push(entry);
            }
            Record::HardState(hard_state) => self.hard_state = hard_state,
        }
        Ok(())
    }
}

/// Decides whether the record at `offset` that failed to decode starts a
/// torn tail, which is truncated, or is damage that recovery must reject.
///
/// A torn tail is possible only in the last segment, because every other
/// segment was synced before the next one was created. There, damage is a
/// torn tail when no valid record starts anywhere after it. A valid record
/// after it means the damage is in the middle of the log, for example a
/// length field that a flipped bit made point past the end of the file.
fn classify_damage(
    bytes: &[u8],
    offset: usize,
    damage: FrameDamage,
    is_last: bool,
) -> Result<SegmentEnd, SegmentError> {
    if !is_last {
        return Err(SegmentError::corrupt(
            offset,
            CorruptReason::DamagedRecord { damage },
        ));
    }

    // NOTE: two crashes that lose no acknowledged entry are still reported as
    // corrupt: an entry whose data contains a whole valid record, torn after
    // it, and a write whose later page reached the disk before an earlier
    // one, which leaves zeros followed by valid records.
    let valid_offset =
        (offset + 1..bytes.len()).find(|&start| format::is_valid_frame(&bytes[start..]));
    if let Some(valid_offset) = valid_offset {
        let reason = CorruptReason::DamagedBeforeValidRecord {
            damage,
            valid_offset: valid_offset as u64,
        };
        return Err(SegmentError::corrupt(offset, reason));
    }
    Ok(SegmentEnd::Torn {
        offset: offset as u64,
    })
}

//! Errors of the WAL.

use std::io;
use std::path::{Path, PathBuf};

use raft_core::LogIndex;

use super::format::RecordType;

/// An error from opening, appending to or syncing the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system call failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The operation, such as "fsync segment" or "read segment".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The log on disk is damaged somewhere other than a torn tail, so
    /// recovery cannot tell which acknowledged entries it lost.
    #[error(
        "WAL segment {} is corrupt at byte offset {offset}: {reason}. \
         The node's log is damaged before its end and cannot be repaired \
         automatically: stop the node, move its data directory aside and \
         let the node rejoin the cluster from its peers",
        file.display()
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: CorruptReason,
    },

    /// A segment was written by a format version this build cannot read.
    #[error(
        "WAL segment {} has format version {version}, but this raftd reads only \
         version {supported}: run a raftd release that supports version {version}",
        file.display()
    )]
    UnsupportedVersion {
        file: PathBuf,
        version: u32,
        supported: u32,
    },

    /// The first entry of an append does not connect to the stored log.
    #[error(
        "cannot append entry {index}: the first entry of an append must have an \
         index from 1 to {next}, the index after the last stored entry"
    )]
    AppendOutOfRange { index: LogIndex, next: LogIndex },

    /// The entries of one append do not have consecutive indexes.
    #[error(
        "cannot append entry {index} after entry {previous}: the entries of one \
         append must have consecutive indexes"
    )]
    AppendNotContiguous { index: LogIndex, previous: LogIndex },

    /// An entry does not fit in a record, whose length field is 32 bits.
    #[error(
        "entry {index} encodes to {size} bytes, over the maximum record payload of {max} bytes"
    )]
    RecordTooLarge {
        index: LogIndex,
        size: usize,
        max: usize,
    },

    /// An earlier write or fsync failed, so the state of the files is unknown.
    #[error(
        "the WAL rejects writes after an earlier write or fsync failed: restart \
         the node to recover from the log on disk"
    )]
    Poisoned,
}

/// Why recovery rejected a segment, for [`WalError::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// A record in a segment that newer segments follow failed to decode.
    /// Only the last segment can have a torn tail.
    #[error("{damage} in a segment that is followed by newer segments")]
    DamagedRecord { damage: FrameDamage },

    /// A record in the last segment failed to decode, but a valid record
    /// starts after it, so the damage is not a torn tail.
    #[error(
        "{damage}, and a valid record starts at offset {valid_offset}, so this is not a torn tail"
    )]
    DamagedBeforeValidRecord {
        damage: FrameDamage,
        valid_offset: u64,
    },

    /// A record has a valid checksum but a type this format does not define.
    #[error("unknown record type {record_type}")]
    UnknownRecordType { record_type: u8 },

    /// A record's payload has the wrong length for its type.
    #[error("{record_type} record has a payload of {len} bytes, expected {expected}")]
    InvalidPayloadLength {
        record_type: RecordType,
        len: usize,
        expected: usize,
    },

    /// An entry record has an entry kind this format does not define.
    #[error("unknown entry kind {kind}")]
    UnknownEntryKind { kind: u8 },

    /// A hard state record's vote field is neither "none" nor "some".
    #[error("invalid vote tag {tag} in a hard state record, expected 0 or 1")]
    InvalidVoteTag { tag: u8 },

    /// An entry's index does not follow the log recovered so far.
    #[error("entry index {index} does not follow the last recovered index {last}")]
    IndexGap { index: LogIndex, last: LogIndex },

    /// A segment does not start with a segment header record.
    #[error("the segment does not start with a segment header record")]
    MissingSegmentHeader,

    /// A segment header record appears after the start of a segment.
    #[error("unexpected segment header record after the start of the segment")]
    UnexpectedSegmentHeader,

    /// A segment header record does not carry the WAL magic.
    #[error("the segment header does not carry the raftd WAL magic")]
    InvalidMagic,

    /// A segment's header names a different sequence number than its file.
    #[error("the segment header has sequence number {found}, but the file name has {expected}")]
    SequenceMismatch { expected: u64, found: u64 },

    /// The sequence numbers of the segments skip one.
    #[error("segment {missing} is missing before this one")]
    MissingSegment { missing: u64 },
}

/// Damage that keeps the bytes at some offset from being a whole record with
/// a valid checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameDamage {
    /// The record header or payload extends past the end of the file.
    #[error("the record is cut short: it needs {needed} bytes, but {available} remain in the file")]
    Incomplete { needed: u64, available: u64 },

    /// The stored checksum does not match the record's type and payload.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
}

/// Builds a closure for `map_err` that wraps an I/O error with its action
/// and path.
pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    move |source| WalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

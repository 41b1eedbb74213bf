//! Encoding and decoding of WAL records. The layout is described in the
//! documentation of the `wal` module.

use std::fmt;

use raft_core::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};

use super::error::{CorruptReason, FrameDamage, WalError};

/// Bytes before a record's payload: length (4), CRC (4) and type (1).
pub(crate) const FRAME_HEADER_LEN: usize = 9;

/// The first 8 bytes of every segment header payload.
pub const MAGIC: [u8; 8] = *b"RAFTDWAL";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Maximum payload length, the largest value of the 32-bit length field.
pub(crate) const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// Payload bytes of an entry record before its data: term, index and kind.
const ENTRY_FIXED_LEN: usize = 8 + 8 + 1;

/// Payload bytes of a hard state record: term, vote tag, vote and commit.
const HARD_STATE_LEN: usize = 8 + 1 + 8 + 8;

/// Payload bytes of a version 1 segment header: magic, version and sequence.
const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8;

/// Bytes of a whole version 1 segment header record.
pub(crate) const SEGMENT_HEADER_RECORD_LEN: u64 = (FRAME_HEADER_LEN + SEGMENT_HEADER_LEN) as u64;

const ENTRY_KIND_NORMAL: u8 = 0;
const ENTRY_KIND_NOOP: u8 = 1;

const VOTE_NONE: u8 = 0;
const VOTE_SOME: u8 = 1;

/// The type byte of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// The first record of every segment: magic, format version, sequence.
    SegmentHeader = 1,
    /// One log entry.
    Entry = 2,
    /// The hard state (term, vote, commit).
    HardState = 3,
}

impl RecordType {
    fn from_u8(value: u8) -> Option<RecordType> {
        match value {
            1 => Some(RecordType::SegmentHeader),
            2 => Some(RecordType::Entry),
            3 => Some(RecordType::HardState),
            _ => None,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::SegmentHeader => "segment header",
            RecordType::Entry => "entry",
            RecordType::HardState => "hard state",
        })
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    SegmentHeader { sequence: u64 },
    Entry(Entry),
    HardState(HardState),
}

/// An error decoding a frame with a valid checksum into a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Corrupt(CorruptReason),
    UnsupportedVersion(u32),
}

impl From<CorruptReason> for DecodeError {
    fn from(reason: CorruptReason) -> Self {
        DecodeError::Corrupt(reason)
    }
}

/// A record's type byte and payload, with the checksum verified.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub record_type: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Returns the number of bytes the frame takes in the file.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Reads the frame at the start of `bytes` and verifies its checksum.
/// Bytes after the frame are ignored.
pub(crate) fn read_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameDamage> {
    let available = bytes.len() as u64;
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameDamage::Incomplete {
            needed: FRAME_HEADER_LEN as u64,
            available,
        });
    }
    let payload_len = read_u32(&bytes[0..4]) as usize;
    let stored = read_u32(&bytes[4..8]);
    let needed = FRAME_HEADER_LEN as u64 + payload_len as u64;
    if available < needed {
        return Err(FrameDamage::Incomplete { needed, available });
    }

    // The checksum covers the type byte and the payload.
    let checked = &bytes[8..FRAME_HEADER_LEN + payload_len];
    let computed = crc32c::crc32c(checked);
    if computed != stored {
        return Err(FrameDamage::ChecksumMismatch { stored, computed });
    }
    Ok(Frame {
        record_type: checked[0],
        payload: &checked[1..],
    })
}

/// Returns whether a frame with a valid checksum and a known record type
/// starts at the beginning of `bytes`.
pub(crate) fn is_valid_frame(bytes: &[u8]) -> bool {
    // Check the type byte and length before computing the checksum, so that
    // scanning garbage byte by byte rarely computes one.
    if bytes.len() < FRAME_HEADER_LEN || RecordType::from_u8(bytes[8]).is_none() {
        return false;
    }
    let payload_len = read_u32(&bytes[0..4]) as u64;
    if bytes.len() as u64 - (FRAME_HEADER_LEN as u64) < payload_len {
        return false;
    }
    read_frame(bytes).is_ok()
}

/// Decodes the record in a frame whose checksum was verified.
pub(crate) fn decode_record(frame: &Frame<'_>) -> Result<Record, DecodeError> {
    let Some(record_type) = RecordType::from_u8(frame.record_type) else {
        return Err(CorruptReason::UnknownRecordType {
            record_type: frame.record_type,
        }
        .into());
    };
    let payload = frame.payload;
    match record_type {
        RecordType::SegmentHeader => decode_segment_header(payload),
        RecordType::Entry => decode_entry(payload).map(Record::Entry),
        RecordType::HardState => decode_hard_state(payload).map(Record::HardState),
    }
}

fn decode_segment_header(payload: &[u8]) -> Result<Record, DecodeError> {
    // Every format version starts its header with the magic and the version,
    // so that an unknown version is reported as such.
    if payload.len() < MAGIC.len() + 4 {
        return Err(invalid_length(
            RecordType::SegmentHeader,
            payload,
            SEGMENT_HEADER_LEN,
        ));
    }
    if payload[..MAGIC.len()] != MAGIC {
        return Err(CorruptReason::InvalidMagic.into());
    }
    let version = read_u32(&payload[8..12]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if payload.len() != SEGMENT_HEADER_LEN {
        return Err(invalid_length(
            RecordType::SegmentHeader,
            payload,
            SEGMENT_HEADER_LEN,
        ));
    }
    Ok(Record::SegmentHeader {
        sequence: read_u64(&payload[12..20]),
    })
}

fn decode_entry(payload: &[u8]) -> Result<Entry, DecodeError> {
    if payload.len() < ENTRY_FIXED_LEN {
        return Err(invalid_length(RecordType::Entry, payload, ENTRY_FIXED_LEN));
    }
    let kind = match payload[16] {
        ENTRY_KIND_NORMAL => EntryKind::Normal,
        ENTRY_KIND_NOOP => EntryKind::Noop,
        kind => return Err(CorruptReason::UnknownEntryKind { kind }.into()),
    };
    Ok(Entry {
        term: Term(read_u64(&payload[0..8])),
        index: LogIndex(read_u64(&payload[8..16])),
        kind,
        data: payload[ENTRY_FIXED_LEN..].to_vec(),
    })
}

fn decode_hard_state(payload: &[u8]) -> Result<HardState, DecodeError> {
    if payload.len() != HARD_STATE_LEN {
        return Err(invalid_length(
            RecordType::HardState,
            payload,
            HARD_STATE_LEN,
        ));
    }
    let vote = match payload[8] {
        VOTE_NONE => None,
        VOTE_SOME => Some(NodeId(read_u64(&payload[9..17]))),
        tag => return Err(CorruptReason::InvalidVoteTag { tag }.into()),
    };
    Ok(HardState {
        term: Term(read_u64(&payload[0..8])),
        vote,
        commit: LogIndex(read_u64(&payload[17..25])),
    })
}

fn invalid_length(record_type: RecordType, payload: &[u8], expected: usize) -> DecodeError {
    CorruptReason::InvalidPayloadLength {
        record_type,
        len: payload.len(),
        expected,
    }
    .into()
}

/// Appends a segment header record for segment `sequence` to `buf`.
pub(crate) fn encode_segment_header(buf: &mut Vec<u8>, sequence: u64) {
    encode_frame(buf, RecordType::SegmentHeader, SEGMENT_HEADER_LEN, |buf| {
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&sequence.to_le_bytes());
    });
}

/// Appends an entry record to `buf`.
///
/// # Errors
///
/// [`WalError::RecordTooLarge`] when the payload does not fit the 32-bit
/// length field. `buf` is unchanged then.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) -> Result<(), WalError> {
    let payload_len = ENTRY_FIXED_LEN.saturating_add(entry.data.len());
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(WalError::RecordTooLarge {
            index: entry.index,
            size: payload_len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    let kind = match entry.kind {
        EntryKind::Normal => ENTRY_KIND_NORMAL,
        EntryKind::Noop => ENTRY_KIND_NOOP,
    };
    encode_frame(buf, RecordType::Entry, payload_len, |buf| {
        buf.extend_from_slice(&entry.term.0.to_le_bytes());
        buf.extend_from_slice(&entry.index.0.to_le_bytes());
        buf.push(kind);
        buf.extend_from_slice(&entry.data);
    });
    Ok(())
}

/// Appends a hard state record to `buf`.
pub(crate) fn encode_hard_state(buf: &mut Vec<u8>, hard_state: &HardState) {
    let (tag, vote) = match hard_state.vote {
        None => (VOTE_NONE, 0),
        Some(node) => (VOTE_SOME, node.0),
    };
    encode_frame(buf, RecordType::HardState, HARD_STATE_LEN, |buf| {
        buf.extend_from_slice(&hard_state.term.0.to_le_bytes());
        buf.push(tag);
        buf.extend_from_slice(&vote.to_le_bytes());
        buf.extend_from_slice(&hard_state.commit.0.to_le_bytes());
    });
}

/// Appends one frame to `buf`: the header, then the payload that
/// `write_payload` appends, which must be `payload_len` bytes.
fn encode_frame(
    buf: &mut Vec<u8>,
    record_type: RecordType,
    payload_len: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.reserve(FRAME_HEADER_LEN + payload_len);
    // Callers check that `payload_len` is at most MAX_PAYLOAD_LEN.
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(record_type as u8);
    write_payload(buf);
    assert_eq!(
        buf.len() - start - FRAME_HEADER_LEN,
        payload_len,
        "{record_type} payload length does not match its declared length"
    );

    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("slice of 4 bytes"))
}

fn read_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("slice of 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(bytes: &[u8]) -> Record {
        let frame = read_frame(bytes).expect("valid frame");
        assert_eq!(frame.encoded_len(), bytes.len());
        decode_record(&frame).expect("valid record")
    }

    #[test]
    fn entry_round_trips() {
        for (kind, data) in [
            (EntryKind::Normal, b"put k v".to_vec()),
            (EntryKind::Noop, Vec::new()),
        ] {
            let entry = Entry {
                term: Term(7),
                index: LogIndex(42),
                kind,
                data,
            };
            let mut buf = Vec::new();
            encode_entry(&mut buf, &entry).unwrap();
            assert_eq!(decode_one(&buf), Record::Entry(entry));
        }
    }

    #[test]
    fn hard_state_round_trips() {
        for vote in [None, Some(NodeId(3))] {
            let hard_state = HardState {
                term: Term(5),
                vote,
                commit: LogIndex(9),
            };
            let mut buf = Vec::new();
            encode_hard_state(&mut buf, &hard_state);
            assert_eq!(decode_one(&buf), Record::HardState(hard_state));
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let mut buf = Vec::new();
        encode_segment_header(&mut buf, 12);
        assert_eq!(buf.len() as u64, SEGMENT_HEADER_RECORD_LEN);
        assert_eq!(decode_one(&buf), Record::SegmentHeader { sequence: 12 });
    }

    #[test]
    fn frame_layout_is_little_endian() {
        let mut buf = Vec::new();
        encode_hard_state(&mut buf, &HardState::default());
        assert_eq!(buf[0..4], (HARD_STATE_LEN as u32).to_le_bytes());
        assert_eq!(buf[4..8], crc32c::crc32c(&buf[8..]).to_le_bytes());
        assert_eq!(buf[8], RecordType::HardState as u8);
    }

    #[test]
    fn read_frame_reports_cut_and_flipped_bytes() {
        let mut buf = Vec::new();
        encode_hard_state(&mut buf, &HardState::default());

        let cut = read_frame(&buf[..buf.len() - 1]).unwrap_err();
        assert_eq!(
            cut,
            FrameDamage::Incomplete {
                needed: buf.len() as u64,
                available: buf.len() as u64 - 1
            }
        );
        let header_cut = read_frame(&buf[..4]).unwrap_err();
        assert_eq!(
            header_cut,
            FrameDamage::Incomplete {
                needed: FRAME_HEADER_LEN as u64,
                available: 4
            }
        );

        let mut flipped = buf.clone();
        flipped[12] ^= 0x01;
        assert!(matches!(
            read_frame(&flipped),
            Err(FrameDamage::ChecksumMismatch { .. })
        ));
        assert!(!is_valid_frame(&flipped));
        assert!(is_valid_frame(&buf));
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            RecordType::SegmentHeader,
            SEGMENT_HEADER_LEN,
            |buf| {
                buf.extend_from_slice(&MAGIC);
                buf.extend_from_slice(&2u32.to_le_bytes());
                buf.extend_from_slice(&1u64.to_le_bytes());
            },
        );
        let frame = read_frame(&buf).unwrap();
        assert_eq!(
            decode_record(&frame),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn invalid_payloads_are_corrupt() {
        let mut entry = Vec::new();
        encode_entry(
            &mut entry,
            &Entry {
                term: Term(1),
                index: LogIndex(1),
                kind: EntryKind::Normal,
                data: Vec::new(),
            },
        )
        .unwrap();
        // Patch the kind byte and recompute the checksum.
        entry[FRAME_HEADER_LEN + 16] = 9;
        let crc = crc32c::crc32c(&entry[8..]);
        entry[4..8].copy_from_slice(&crc.to_le_bytes());
        let frame = read_frame(&entry).unwrap();
        assert_eq!(
            decode_record(&frame),
            Err(DecodeError::Corrupt(CorruptReason::UnknownEntryKind {
                kind: 9
            }))
        );

        let unknown = Frame {
            record_type: 200,
            payload: &[],
        };
        assert_eq!(
            decode_record(&unknown),
            Err(DecodeError::Corrupt(CorruptReason::UnknownRecordType {
                record_type: 200
            }))
        );

        let short_hard_state = Frame {
            record_type: RecordType::HardState as u8,
            payload: &[0; 3],
        };
        assert_eq!(
            decode_record(&short_hard_state),
            Err(DecodeError::Corrupt(CorruptReason::InvalidPayloadLength {
                record_type: RecordType::HardState,
                len: 3,
                expected: HARD_STATE_LEN,
            }))
        );
    }
}

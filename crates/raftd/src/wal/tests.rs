//! Tests of the WAL against real files in temporary directories.

use std::cell::Cell;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use raft_core::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};

use super::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_RECORD_LEN};
use super::segment;
use super::*;

/// Data length of the entries from `entry`, so that records have a known size.
const DATA_LEN: usize = 32;

/// Bytes of an entry record made by `entry`.
const ENTRY_RECORD_LEN: u64 = (FRAME_HEADER_LEN + 17 + DATA_LEN) as u64;

/// Bytes of a hard state record.
const HARD_STATE_RECORD_LEN: u64 = (FRAME_HEADER_LEN + 25) as u64;

/// A segment size that fits three entry records from `entry` before rolling.
const SMALL_SEGMENT: u64 = SEGMENT_HEADER_RECORD_LEN + 3 * ENTRY_RECORD_LEN;

fn entry(term: u64, index: u64) -> Entry {
    let mut data = format!("term {term} index {index}").into_bytes();
    data.resize(DATA_LEN, b'.');
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data,
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|index| entry(term, index)).collect()
}

fn hard_state(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: vote.map(NodeId),
        commit: LogIndex(commit),
    }
}

fn open(dir: &Path, segment_size: u64) -> (Wal, Recovered) {
    Wal::open(OsDisk, dir, WalOptions { segment_size }).expect("open WAL")
}

fn open_err(dir: &Path) -> WalError {
    Wal::open(OsDisk, dir, WalOptions::default()).expect_err("open must fail")
}

/// Appends each entry with its own sync, as a follower receiving one entry
/// per `Ready` would.
fn append_each(wal: &mut Wal, entries: &[Entry]) {
    for entry in entries {
        wal.append(std::slice::from_ref(entry), None).unwrap();
        wal.sync().unwrap();
    }
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(segment::file_name(sequence))
}

/// Returns the segment files in `dir`, in sequence order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| segment::parse_file_name(path.file_name().unwrap()).is_some())
        .collect();
    files.sort();
    files
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Writes segment `sequence` of `dir` with a header followed by the bytes
/// that `records` appends.
fn write_raw_segment(dir: &Path, sequence: u64, records: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = Vec::new();
    format::encode_segment_header(&mut bytes, sequence);
    records(&mut bytes);
    fs::create_dir_all(dir).unwrap();
    fs::write(segment_path(dir, sequence), bytes).unwrap();
}

/// Returns a frame with a valid checksum for any type byte and payload.
fn raw_frame(record_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut checked = vec![record_type];
    checked.extend_from_slice(payload);
    let mut frame = Vec::new();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&checked).to_le_bytes());
    frame.extend_from_slice(&checked);
    frame
}

fn expect_corrupt(error: WalError) -> (PathBuf, u64, CorruptReason) {
    match error {
        WalError::Corrupt {
            file,
            offset,
            reason,
        } => (file, offset, reason),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn reopen_recovers_entries_and_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered, Recovered::default());
    assert_eq!(wal.last_index(), LogIndex(0));

    let mut noop = entry(1, 1);
    noop.kind = EntryKind::Noop;
    noop.data.clear();
    let mut written = vec![noop];
    written.extend(entries(1, 2..=5));
    wal.append(&written[..3], Some(&hard_state(1, Some(2), 0)))
        .unwrap();
    wal.append(&written[3..], Some(&hard_state(1, Some(2), 4)))
        .unwrap();
    wal.append(&[], Some(&hard_state(2, None, 5))).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), LogIndex(5));
    drop(wal);

    let (wal, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, written);
    assert_eq!(recovered.hard_state, hard_state(2, None, 5));
    assert_eq!(recovered.truncated_tail, None);
    assert_eq!(wal.last_index(), LogIndex(5));
}

#[test]
fn open_creates_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("node").join("wal");
    let (mut wal, recovered) = open(&wal_dir, DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered, Recovered::default());
    wal.sync().unwrap();

    let files = segment_files(&wal_dir);
    assert_eq!(files, vec![segment_path(&wal_dir, 1)]);
    assert_eq!(file_len(&files[0]), SEGMENT_HEADER_RECORD_LEN);
}

#[test]
fn other_files_in_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("snapshot.tmp"), b"not a segment").unwrap();
    fs::write(dir.path().join("1.wal"), b"not a segment either").unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=2), None).unwrap();
    wal.sync().unwrap();
    drop(wal);

    let (_, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, entries(1, 1..=2));
}

#[test]
fn replaced_suffix_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=5), None).unwrap();
    wal.append(&entries(2, 3..=4), Some(&hard_state(2, Some(1), 2)))
        .unwrap();
    assert_eq!(wal.last_index(), LogIndex(4));
    wal.sync().unwrap();
    drop(wal);

    let mut expected = entries(1, 1..=2);
    expected.extend(entries(2, 3..=4));
    let (mut wal, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, expected);
    assert_eq!(wal.last_index(), LogIndex(4));

    // Appending after the replacement extends the new suffix.
    wal.append(&entries(2, 5..=5), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    expected.push(entry(2, 5));
    let (_, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, expected);
}

#[test]
fn torn_tail_truncated_at_every_cut() {
    let source = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(source.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=3), Some(&hard_state(1, Some(1), 2)))
        .unwrap();
    wal.sync().unwrap();
    let path = segment_path(source.path(), 1);
    let synced_len = file_len(&path);
    // The last append writes an entry record, then a hard state record.
    wal.append(&entries(1, 4..=4), Some(&hard_state(1, Some(1), 3)))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let full = fs::read(&path).unwrap();
    let entry_end = synced_len + ENTRY_RECORD_LEN;
    assert_eq!(full.len() as u64, entry_end + HARD_STATE_RECORD_LEN);

    for cut in synced_len..full.len() as u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        fs::write(&path, &full[..cut as usize]).unwrap();

        let (mut wal, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
        let (kept_entries, valid_len) = if cut < entry_end {
            (entries(1, 1..=3), synced_len)
        } else {
            (entries(1, 1..=4), entry_end)
        };
        assert_eq!(recovered.entries, kept_entries, "cut at {cut}");
        assert_eq!(
            recovered.hard_state,
            hard_state(1, Some(1), 2),
            "cut at {cut}"
        );
        let expected_tail = (cut > valid_len).then(|| TornTail {
            file: path.clone(),
            offset: valid_len,
            dropped_bytes: cut - valid_len,
        });
        assert_eq!(recovered.truncated_tail, expected_tail, "cut at {cut}");
        assert_eq!(file_len(&path), valid_len, "cut at {cut}");

        // A later append continues after the truncated tail.
        let next = LogIndex(kept_entries.len() as u64 + 1);
        let replacement = entry(2, next.0);
        wal.append(
            std::slice::from_ref(&replacement),
            Some(&hard_state(2, None, 3)),
        )
        .unwrap();
        wal.sync().unwrap();
        drop(wal);

        let (wal, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
        let mut expected = kept_entries;
        expected.push(replacement);
        assert_eq!(recovered.entries, expected, "cut at {cut}");
        assert_eq!(recovered.hard_state, hard_state(2, None, 3), "cut at {cut}");
        assert_eq!(recovered.truncated_tail, None, "cut at {cut}");
        assert_eq!(wal.last_index(), next, "cut at {cut}");
    }
}

#[test]
fn torn_segment_header_is_truncated() {
    let source = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(source.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=3));
    drop(wal);
    // The last sync filled segment 1 and created segment 2 with its header.
    let header = fs::read(segment_path(source.path(), 2)).unwrap();
    assert_eq!(header.len() as u64, SEGMENT_HEADER_RECORD_LEN);
    let first = fs::read(segment_path(source.path(), 1)).unwrap();

    for cut in 0..header.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), &first).unwrap();
        fs::write(segment_path(dir.path(), 2), &header[..cut]).unwrap();

        let (mut wal, recovered) = open(dir.path(), SMALL_SEGMENT);
        assert_eq!(recovered.entries, entries(1, 1..=3), "cut at {cut}");
        let expected_tail = (cut > 0).then(|| TornTail {
            file: segment_path(dir.path(), 2),
            offset: 0,
            dropped_bytes: cut as u64,
        });
        assert_eq!(recovered.truncated_tail, expected_tail, "cut at {cut}");

        // Open rewrites the header, so segment 2 takes appends again.
        wal.append(&entries(1, 4..=4), None).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered) = open(dir.path(), SMALL_SEGMENT);
        assert_eq!(recovered.entries, entries(1, 1..=4), "cut at {cut}");
        assert_eq!(segment_files(dir.path()).len(), 2, "cut at {cut}");
    }
}

#[test]
fn zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=3), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), 1);
    let valid_len = file_len(&path);

    // Zeros after the last record, as a file system leaves when it extended
    // the file but the data never reached the disk.
    let mut bytes = fs::read(&path).unwrap();
    bytes.resize(bytes.len() + 4096, 0);
    fs::write(&path, &bytes).unwrap();
    let (_, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, entries(1, 1..=3));
    let expected_tail = TornTail {
        file: path.clone(),
        offset: valid_len,
        dropped_bytes: 4096,
    };
    assert_eq!(recovered.truncated_tail, Some(expected_tail));
    assert_eq!(file_len(&path), valid_len);

    // Zeros over the second half of the last record.
    let mut bytes = fs::read(&path).unwrap();
    let last_start = (valid_len - ENTRY_RECORD_LEN) as usize;
    let zeroed_from = last_start + ENTRY_RECORD_LEN as usize / 2;
    bytes[zeroed_from..].fill(0);
    fs::write(&path, &bytes).unwrap();
    let (_, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, entries(1, 1..=2));
    let expected_tail = TornTail {
        file: path.clone(),
        offset: last_start as u64,
        dropped_bytes: ENTRY_RECORD_LEN,
    };
    assert_eq!(recovered.truncated_tail, Some(expected_tail));
}

#[test]
fn checksum_mismatch_in_final_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=3), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let last_byte = bytes.len() - 1;
    bytes[last_byte] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let (_, recovered) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    assert_eq!(recovered.entries, entries(1, 1..=2));
    let expected_tail = TornTail {
        file: path,
        offset: bytes.len() as u64 - ENTRY_RECORD_LEN,
        dropped_bytes: ENTRY_RECORD_LEN,
    };
    assert_eq!(recovered.truncated_tail, Some(expected_tail));
}

#[test]
fn flipped_byte_mid_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=5), None).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let path = segment_path(dir.path(), 1);
    let original = fs::read(&path).unwrap();
    let third = SEGMENT_HEADER_RECORD_LEN + 2 * ENTRY_RECORD_LEN;

    // Flip a byte of the third entry's data, then the high byte of its length
    // field, which makes the record seem to extend past the end of the file.
    for flipped in [third + ENTRY_RECORD_LEN - 5, third + 3] {
        let mut bytes = original.clone();
        bytes[flipped as usize] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let error = open_err(dir.path());
        let message = error.to_string();
        let (file, offset, reason) = expect_corrupt(error);
        assert_eq!(file, path);
        assert_eq!(offset, third, "flipped byte {flipped}");
        let CorruptReason::DamagedBeforeValidRecord { valid_offset, .. } = reason else {
            panic!("expected DamagedBeforeValidRecord, got {reason:?}");
        };
        assert!(valid_offset > third, "valid record at {valid_offset}");
        assert!(
            message.contains("move its data directory aside"),
            "{message}"
        );
        // Recovery must leave the file alone.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }
}

#[test]
fn damaged_record_in_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=5));
    drop(wal);
    let first = segment_path(dir.path(), 1);
    let len = file_len(&first);
    let cut = len - 3;
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let (file, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(file, first);
    assert_eq!(offset, len - ENTRY_RECORD_LEN);
    let damage = FrameDamage::Incomplete {
        needed: ENTRY_RECORD_LEN,
        available: ENTRY_RECORD_LEN - 3,
    };
    assert_eq!(reason, CorruptReason::DamagedRecord { damage });
}

#[test]
fn segments_roll_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=10));
    wal.append(&[], Some(&hard_state(1, Some(3), 10))).unwrap();
    wal.sync().unwrap();
    drop(wal);

    // Three entries fill a segment, so ten entries and a hard state take
    // four segments, the last holding the tenth entry and the hard state.
    let files = segment_files(dir.path());
    let expected_files: Vec<PathBuf> = (1..=4).map(|seq| segment_path(dir.path(), seq)).collect();
    assert_eq!(files, expected_files);
    for file in &files[..3] {
        assert_eq!(file_len(file), SMALL_SEGMENT, "{}", file.display());
    }
    assert_eq!(
        file_len(&files[3]),
        SEGMENT_HEADER_RECORD_LEN + ENTRY_RECORD_LEN + HARD_STATE_RECORD_LEN
    );

    let (wal, recovered) = open(dir.path(), SMALL_SEGMENT);
    assert_eq!(recovered.entries, entries(1, 1..=10));
    assert_eq!(recovered.hard_state, hard_state(1, Some(3), 10));
    assert_eq!(wal.last_index(), LogIndex(10));
}

#[test]
fn segment_rolls_only_at_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    for index in 1..=10 {
        wal.append(&entries(1, index..=index), None).unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 1);
    wal.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    let first = segment_path(dir.path(), 1);
    assert_eq!(
        file_len(&first),
        SEGMENT_HEADER_RECORD_LEN + 10 * ENTRY_RECORD_LEN
    );

    // A sync with nothing appended does not roll the new, empty segment.
    wal.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn replaced_suffix_across_segment_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=8));
    assert_eq!(segment_files(dir.path()).len(), 3);

    // Entry 3 is in segment 1 and entries 4 to 8 in segments 2 and 3, so the
    // replaced suffix spans every segment boundary.
    wal.append(&entries(2, 3..=4), Some(&hard_state(2, None, 2)))
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), LogIndex(4));
    drop(wal);

    let mut expected = entries(1, 1..=2);
    expected.extend(entries(2, 3..=4));
    let (mut wal, recovered) = open(dir.path(), SMALL_SEGMENT);
    assert_eq!(recovered.entries, expected);
    assert_eq!(wal.last_index(), LogIndex(4));

    append_each(&mut wal, &entries(2, 5..=6));
    drop(wal);
    expected.extend(entries(2, 5..=6));
    let (_, recovered) = open(dir.path(), SMALL_SEGMENT);
    assert_eq!(recovered.entries, expected);
}

#[test]
fn index_gap_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_raw_segment(dir.path(), 1, |bytes| {
        format::encode_entry(bytes, &entry(1, 1)).unwrap();
        format::encode_entry(bytes, &entry(1, 3)).unwrap();
    });

    let (file, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(file, segment_path(dir.path(), 1));
    assert_eq!(offset, SEGMENT_HEADER_RECORD_LEN + ENTRY_RECORD_LEN);
    let expected = CorruptReason::IndexGap {
        index: LogIndex(3),
        last: LogIndex(1),
    };
    assert_eq!(reason, expected);
}

#[test]
fn entry_index_zero_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_raw_segment(dir.path(), 1, |bytes| {
        format::encode_entry(bytes, &entry(1, 0)).unwrap();
    });

    let (_, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(offset, SEGMENT_HEADER_RECORD_LEN);
    let expected = CorruptReason::IndexGap {
        index: LogIndex(0),
        last: LogIndex(0),
    };
    assert_eq!(reason, expected);
}

#[test]
fn unknown_record_type_is_corrupt() {
    // The record has a valid checksum and is the last in the log, so it is
    // not a torn tail but a record this build cannot read.
    let dir = tempfile::tempdir().unwrap();
    write_raw_segment(dir.path(), 1, |bytes| {
        format::encode_entry(bytes, &entry(1, 1)).unwrap();
        bytes.extend_from_slice(&raw_frame(9, b"future"));
    });

    let (_, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(offset, SEGMENT_HEADER_RECORD_LEN + ENTRY_RECORD_LEN);
    assert_eq!(reason, CorruptReason::UnknownRecordType { record_type: 9 });
}

#[test]
fn segment_without_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    format::encode_entry(&mut bytes, &entry(1, 1)).unwrap();
    fs::write(segment_path(dir.path(), 1), bytes).unwrap();

    let (_, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(offset, 0);
    assert_eq!(reason, CorruptReason::MissingSegmentHeader);
}

#[test]
fn unsupported_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut payload = b"RAFTDWAL".to_vec();
    payload.extend_from_slice(&7u32.to_le_bytes());
    payload.extend_from_slice(&1u64.to_le_bytes());
    let path = segment_path(dir.path(), 1);
    fs::write(&path, raw_frame(RecordType::SegmentHeader as u8, &payload)).unwrap();

    match open_err(dir.path()) {
        WalError::UnsupportedVersion {
            file,
            version,
            supported,
        } => {
            assert_eq!(file, path);
            assert_eq!(version, 7);
            assert_eq!(supported, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn missing_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=7));
    drop(wal);
    fs::remove_file(segment_path(dir.path(), 2)).unwrap();

    let (file, offset, reason) = expect_corrupt(open_err(dir.path()));
    assert_eq!(file, segment_path(dir.path(), 3));
    assert_eq!(offset, 0);
    assert_eq!(reason, CorruptReason::MissingSegment { missing: 2 });
}

#[test]
fn append_after_recovery_continues_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), SMALL_SEGMENT);
    append_each(&mut wal, &entries(1, 1..=4));
    drop(wal);
    let second = segment_path(dir.path(), 2);
    assert_eq!(
        file_len(&second),
        SEGMENT_HEADER_RECORD_LEN + ENTRY_RECORD_LEN
    );

    let (mut wal, recovered) = open(dir.path(), SMALL_SEGMENT);
    assert_eq!(recovered.entries, entries(1, 1..=4));
    wal.append(&entries(1, 5..=5), None).unwrap();
    wal.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(
        file_len(&second),
        SEGMENT_HEADER_RECORD_LEN + 2 * ENTRY_RECORD_LEN
    );

    // The next entry fills segment 2, so the sync after it rolls to 3.
    wal.append(&entries(1, 6..=6), None).unwrap();
    wal.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 3);
    drop(wal);

    let (wal, recovered) = open(dir.path(), SMALL_SEGMENT);
    assert_eq!(recovered.entries, entries(1, 1..=6));
    assert_eq!(wal.last_index(), LogIndex(6));
}

#[test]
fn append_rejects_invalid_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), DEFAULT_SEGMENT_SIZE);
    wal.append(&entries(1, 1..=3), None).unwrap();
    let len = file_len(&segment_path(dir.path(), 1));

    let error = wal.append(&entries(1, 5..=5), None).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::AppendOutOfRange {
                index: LogIndex(5),
                next: LogIndex(4)
            }
        ),
        "{error:?}"
    );
    let error = wal.append(&entries(1, 0..=0), None).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::AppendOutOfRange {
                index: LogIndex(0),
                ..
            }
        ),
        "{error:?}"
    );
    let gap = vec![entry(1, 4), entry(1, 6)];
    let error = wal.append(&gap, None).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::AppendNotContiguous {
                index: LogIndex(6),
                previous: LogIndex(4)
            }
        ),
        "{error:?}"
    );

    // A rejected append writes nothing and leaves the WAL usable.
    assert_eq!(file_len(&segment_path(dir.path(), 1)), len);
    assert_eq!(wal.last_index(), LogIndex(3));
    wal.append(&entries(1, 4..=4), None).unwrap();
    wal.sync().unwrap();
}

/// A disk that forwards to [`OsDisk`], counts writes and fsyncs, and fails
/// file fsyncs on request.
#[derive(Default)]
struct CountingDisk {
    writes: Cell<usize>,
    file_syncs: Cell<usize>,
    dir_syncs: Cell<usize>,
    fail_file_sync: Cell<bool>,
}

impl Disk for &CountingDisk {
    type File = fs::File;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        OsDisk.list_dir(path)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        OsDisk.read_file(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<fs::File> {
        OsDisk.create_new(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<fs::File> {
        OsDisk.open_append(path)
    }

    fn write(&self, file: &mut fs::File, data: &[u8]) -> io::Result<()> {
        self.writes.set(self.writes.get() + 1);
        OsDisk.write(file, data)
    }

    fn sync_file(&self, file: &mut fs::File) -> io::Result<()> {
        if self.fail_file_sync.get() {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.file_syncs.set(self.file_syncs.get() + 1);
        OsDisk.sync_file(file)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.dir_syncs.set(self.dir_syncs.get() + 1);
        OsDisk.sync_dir(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OsDisk.truncate(path, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsDisk.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_file(path)
    }
}

#[test]
fn append_writes_once_and_sync_fsyncs_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = CountingDisk::default();
    let options = WalOptions {
        segment_size: SMALL_SEGMENT,
    };
    let (mut wal, _) = Wal::open(&disk, dir.path(), options).unwrap();
    // Open wrote the header of segment 1.
    assert_eq!(disk.writes.get(), 1);
    assert_eq!(disk.file_syncs.get(), 0);

    wal.append(&entries(1, 1..=2), Some(&hard_state(1, Some(1), 0)))
        .unwrap();
    wal.append(&[], None).unwrap();
    assert_eq!(disk.writes.get(), 2, "one write per non-empty append");
    assert_eq!(disk.file_syncs.get(), 0, "append must not fsync");

    // The first sync also fsyncs the directory that contains the new segment.
    wal.sync().unwrap();
    assert_eq!(disk.file_syncs.get(), 1);
    assert_eq!(disk.dir_syncs.get(), 1);
    wal.sync().unwrap();
    assert_eq!(disk.file_syncs.get(), 1, "nothing to sync");
    assert_eq!(disk.dir_syncs.get(), 1);

    // Filling segment 1 makes the sync roll: the header of segment 2 is one
    // more write, and the directory is fsynced again.
    wal.append(&entries(1, 3..=3), None).unwrap();
    wal.sync().unwrap();
    assert_eq!(disk.writes.get(), 4);
    assert_eq!(disk.file_syncs.get(), 2);
    assert_eq!(disk.dir_syncs.get(), 2);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn failed_sync_poisons_wal() {
    let dir = tempfile::tempdir().unwrap();
    let disk = CountingDisk::default();
    let (mut wal, _) = Wal::open(&disk, dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 1..=1), None).unwrap();
    disk.fail_file_sync.set(true);

    let error = wal.sync().unwrap_err();
    assert!(
        matches!(
            error,
            WalError::Io {
                action: "fsync segment",
                ..
            }
        ),
        "{error:?}"
    );
    disk.fail_file_sync.set(false);
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(
        wal.append(&entries(1, 2..=2), None),
        Err(WalError::Poisoned)
    ));
}

#[test]
fn os_disk_renames_and_removes_files() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("a");
    let to = dir.path().join("b");
    let mut file = OsDisk.create_new(&from).unwrap();
    OsDisk.write(&mut file, b"data").unwrap();
    OsDisk.sync_file(&mut file).unwrap();
    assert!(
        OsDisk.create_new(&from).is_err(),
        "create_new must not reuse a file"
    );

    OsDisk.rename(&from, &to).unwrap();
    OsDisk.sync_dir(dir.path()).unwrap();
    assert_eq!(OsDisk.read_file(&to).unwrap(), b"data");
    OsDisk.truncate(&to, 2).unwrap();
    assert_eq!(OsDisk.read_file(&to).unwrap(), b"da");

    OsDisk.remove_file(&to).unwrap();
    assert_eq!(OsDisk.list_dir(dir.path()).unwrap(), Vec::<OsString>::new());
}

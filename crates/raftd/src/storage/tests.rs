//! Tests of both storages against real files in temporary directories.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use raft_core::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};

use super::threaded::POLL_INTERVAL_WITHOUT_WAKE;
use super::*;
use crate::wal::{Disk, OsDisk, Wal, WalOptions};

/// How long a test waits for the writer thread before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// [`OsDisk`] that counts file fsyncs, can hold an fsync until the test
/// opens a gate, and can fail writes.
#[derive(Clone, Default)]
struct TestDisk {
    inner: Arc<TestDiskState>,
}

#[derive(Default)]
struct TestDiskState {
    file_syncs: AtomicUsize,
    fail_writes: AtomicBool,
    /// While true, `sync_file` blocks.
    gate_closed: Mutex<bool>,
    gate_opened: Condvar,
    /// Receives one message each time `sync_file` starts.
    sync_started: Mutex<Option<mpsc::Sender<()>>>,
}

impl TestDisk {
    fn file_syncs(&self) -> usize {
        self.inner.file_syncs.load(Ordering::SeqCst)
    }

    fn close_gate(&self) -> mpsc::Receiver<()> {
        *self.inner.gate_closed.lock().unwrap() = true;
        let (sender, receiver) = mpsc::channel();
        *self.inner.sync_started.lock().unwrap() = Some(sender);
        receiver
    }

    fn open_gate(&self) {
        *self.inner.gate_closed.lock().unwrap() = false;
        self.inner.gate_opened.notify_all();
    }
}

impl Disk for TestDisk {
    type File = File;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        OsDisk.list_dir(path)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        OsDisk.read_file(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        OsDisk.create_new(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<File> {
        OsDisk.open_append(path)
    }

    fn write(&self, file: &mut File, data: &[u8]) -> io::Result<()> {
        if self.inner.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected write failure"));
        }
        OsDisk.write(file, data)
    }

    fn sync_file(&self, file: &mut File) -> io::Result<()> {
        if let Some(sender) = &*self.inner.sync_started.lock().unwrap() {
            let _ = sender.send(());
        }
        let mut closed = self.inner.gate_closed.lock().unwrap();
        while *closed {
            closed = self.inner.gate_opened.wait(closed).unwrap();
        }
        drop(closed);
        self.inner.file_syncs.fetch_add(1, Ordering::SeqCst);
        OsDisk.sync_file(file)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
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

fn wal_dir(temp: &tempfile::TempDir) -> PathBuf {
    temp.path().join("wal")
}

fn open_wal(disk: TestDisk, dir: &Path) -> Wal<TestDisk> {
    let (wal, recovered) = Wal::open(disk, dir, WalOptions::default()).unwrap();
    assert!(recovered.entries.is_empty());
    wal
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: format!("entry {index}").into_bytes(),
    }
}

/// Returns a batch of one entry at index `id`, with a hard state that
/// commits the entry before it.
fn batch(id: u64) -> PersistBatch {
    PersistBatch {
        id: BatchId(id),
        entries: vec![entry(1, id)],
        hard_state: Some(HardState {
            term: Term(1),
            vote: Some(NodeId(1)),
            commit: LogIndex(id - 1),
        }),
        sync: true,
    }
}

fn completion(id: u64) -> Completion {
    Completion {
        id: BatchId(id),
        last_entry: Some((LogIndex(id), Term(1))),
    }
}

/// Calls `completed` until it has returned `count` completions in total.
fn wait_for_completions(storage: &mut ThreadedStorage, count: usize) -> Vec<Completion> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut done = Vec::new();
    while done.len() < count {
        assert!(Instant::now() < deadline, "completed only {done:?}");
        done.extend(storage.completed().unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    done
}

fn wait_for_error(storage: &mut ThreadedStorage) -> StorageError {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        assert!(Instant::now() < deadline, "no error reported");
        match storage.completed() {
            Err(error) => return error,
            Ok(done) => assert!(done.is_empty(), "completed {done:?} after a failure"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn recovered_entries(dir: &Path) -> Vec<Entry> {
    let (_, recovered) = Wal::open(OsDisk, dir, WalOptions::default()).unwrap();
    recovered.entries
}

#[test]
fn threaded_group_commits_batches_queued_during_fsync() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), None).unwrap();

    let sync_started = disk.close_gate();
    storage.submit(batch(1)).unwrap();
    sync_started.recv_timeout(WAIT_LIMIT).unwrap();
    // The writer is inside the fsync of batch 1, so these three wait.
    for id in 2..=4 {
        storage.submit(batch(id)).unwrap();
    }
    assert_eq!(storage.completed().unwrap(), Vec::new());
    assert_eq!(storage.max_wait(), Some(POLL_INTERVAL_WITHOUT_WAKE));
    disk.open_gate();

    let done = wait_for_completions(&mut storage, 4);
    assert_eq!(done, (1..=4).map(completion).collect::<Vec<_>>());
    assert_eq!(
        disk.file_syncs(),
        2,
        "one fsync for batch 1, one for 2 to 4"
    );
    assert_eq!(storage.max_wait(), None);
    drop(storage);
    assert_eq!(recovered_entries(&wal_dir(&temp)).len(), 4);
}

#[test]
fn threaded_wakes_loop_after_completion() {
    let temp = tempfile::tempdir().unwrap();
    let wal = open_wal(TestDisk::default(), &wal_dir(&temp));
    let (woken_sender, woken) = mpsc::channel();
    let wake: WakeFn = Box::new(move || {
        let _ = woken_sender.send(());
    });
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), Some(wake)).unwrap();

    storage.submit(batch(1)).unwrap();
    assert_eq!(
        storage.max_wait(),
        None,
        "the wake callback replaces polling"
    );
    woken.recv_timeout(WAIT_LIMIT).unwrap();
    assert_eq!(storage.completed().unwrap(), vec![completion(1)]);
}

#[test]
fn threaded_completes_in_submission_order() {
    let temp = tempfile::tempdir().unwrap();
    let wal = open_wal(TestDisk::default(), &wal_dir(&temp));
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), None).unwrap();

    let mut done = Vec::new();
    for id in 1..=50 {
        storage.submit(batch(id)).unwrap();
        done.extend(storage.completed().unwrap());
    }
    let remaining = 50 - done.len();
    done.extend(wait_for_completions(&mut storage, remaining));
    assert_eq!(done, (1..=50).map(completion).collect::<Vec<_>>());
}

#[test]
fn threaded_batch_without_entries_completes() {
    let temp = tempfile::tempdir().unwrap();
    let wal = open_wal(TestDisk::default(), &wal_dir(&temp));
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), None).unwrap();

    let mut hard_state_only = batch(1);
    hard_state_only.entries.clear();
    storage.submit(hard_state_only).unwrap();
    let done = wait_for_completions(&mut storage, 1);
    assert_eq!(
        done,
        vec![Completion {
            id: BatchId(1),
            last_entry: None,
        }]
    );
}

#[test]
fn threaded_write_failure_stops_storage() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), None).unwrap();
    storage.submit(batch(1)).unwrap();
    wait_for_completions(&mut storage, 1);

    disk.inner.fail_writes.store(true, Ordering::SeqCst);
    storage.submit(batch(2)).unwrap();
    let error = wait_for_error(&mut storage);
    assert!(
        matches!(error, StorageError::Wal { ref dir, .. } if *dir == wal_dir(&temp)),
        "{error:?}"
    );

    // The writer thread ended, so later batches are rejected.
    let error = storage.submit(batch(3)).unwrap_err();
    assert!(
        matches!(error, StorageError::WriterStopped { .. }),
        "{error:?}"
    );
}

#[test]
fn threaded_drop_writes_submitted_batches() {
    let temp = tempfile::tempdir().unwrap();
    let wal = open_wal(TestDisk::default(), &wal_dir(&temp));
    let mut storage = ThreadedStorage::spawn(wal, wal_dir(&temp), None).unwrap();
    for id in 1..=3 {
        storage.submit(batch(id)).unwrap();
    }
    drop(storage);
    assert_eq!(recovered_entries(&wal_dir(&temp)).len(), 3);
}

#[test]
fn inline_writes_queued_batches_with_one_fsync() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = InlineStorage::new(wal, wal_dir(&temp));

    for id in 1..=3 {
        storage.submit(batch(id)).unwrap();
    }
    assert_eq!(disk.file_syncs(), 0, "submit does not write");
    assert_eq!(storage.max_wait(), Some(Duration::ZERO));

    assert_eq!(
        storage.completed().unwrap(),
        (1..=3).map(completion).collect::<Vec<_>>()
    );
    assert_eq!(disk.file_syncs(), 1);
    assert_eq!(storage.completed().unwrap(), Vec::new());
    assert_eq!(storage.max_wait(), None);
    assert_eq!(recovered_entries(&wal_dir(&temp)).len(), 3);
}

#[test]
fn inline_stall_holds_batches_until_resume() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = InlineStorage::new(wal, wal_dir(&temp));

    storage.stall();
    storage.submit(batch(1)).unwrap();
    storage.submit(batch(2)).unwrap();
    for _ in 0..3 {
        assert_eq!(storage.completed().unwrap(), Vec::new());
    }
    assert_eq!(storage.queued_len(), 2);
    assert_eq!(
        storage.max_wait(),
        None,
        "a stalled disk gives the loop nothing to wait for"
    );
    assert_eq!(disk.file_syncs(), 0);
    assert!(recovered_entries(&wal_dir(&temp)).is_empty());

    storage.resume();
    assert_eq!(
        storage.completed().unwrap(),
        vec![completion(1), completion(2)]
    );
    assert_eq!(disk.file_syncs(), 1);
}

#[test]
fn inline_batch_without_sync_skips_fsync() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = InlineStorage::new(wal, wal_dir(&temp));

    let mut unsynced = batch(1);
    unsynced.sync = false;
    storage.submit(unsynced).unwrap();
    assert_eq!(storage.completed().unwrap(), vec![completion(1)]);
    assert_eq!(disk.file_syncs(), 0);
}

#[test]
fn inline_write_failure_returns_error() {
    let temp = tempfile::tempdir().unwrap();
    let disk = TestDisk::default();
    let wal = open_wal(disk.clone(), &wal_dir(&temp));
    let mut storage = InlineStorage::new(wal, wal_dir(&temp));

    disk.inner.fail_writes.store(true, Ordering::SeqCst);
    storage.submit(batch(1)).unwrap();
    let error = storage.completed().unwrap_err();
    assert!(matches!(error, StorageError::Wal { .. }), "{error:?}");

    // The log is poisoned: a retry fails even with a working disk.
    disk.inner.fail_writes.store(false, Ordering::SeqCst);
    let error = storage.completed().unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::Wal {
                source: crate::wal::WalError::Poisoned,
                ..
            }
        ),
        "{error:?}"
    );
}

//! Storage that writes on the caller's thread, for the simulator and tests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use super::{Completion, LogStorage, PersistBatch, StorageError};
use crate::wal::{Disk, Wal};

/// A [`LogStorage`] that queues batches in [`submit`](LogStorage::submit)
/// and writes them in the next [`completed`](LogStorage::completed) call,
/// with one fsync for all of them. It needs no thread, so it works with a
/// disk that is not `Send`, such as the simulator's, and a run replays
/// exactly.
///
/// While [stalled](InlineStorage::stall), it writes and completes nothing,
/// as a disk that hangs would.
#[derive(Debug)]
pub struct InlineStorage<D: Disk> {
    wal: Wal<D>,
    /// The WAL directory, for error messages.
    dir: PathBuf,
    queued: VecDeque<PersistBatch>,
    stalled: bool,
}

impl<D: Disk> InlineStorage<D> {
    /// Wraps an opened and recovered WAL that lives in `dir`.
    pub fn new(wal: Wal<D>, dir: PathBuf) -> InlineStorage<D> {
        InlineStorage {
            wal,
            dir,
            queued: VecDeque::new(),
            stalled: false,
        }
    }

    /// Stops writing: queued and later batches wait until
    /// [`resume`](InlineStorage::resume).
    pub fn stall(&mut self) {
        self.stalled = true;
    }

    /// Lets the next [`completed`](LogStorage::completed) call write every
    /// queued batch.
    pub fn resume(&mut self) {
        self.stalled = false;
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Number of batches submitted and not yet written.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }
}

impl<D: Disk> LogStorage for InlineStorage<D> {
    fn submit(&mut self, batch: PersistBatch) -> Result<(), StorageError> {
        self.queued.push_back(batch);
        Ok(())
    }

    fn completed(&mut self) -> Result<Vec<Completion>, StorageError> {
        if self.stalled || self.queued.is_empty() {
            return Ok(Vec::new());
        }
        let dir = &self.dir;
        let wal_error = |source| StorageError::Wal {
            dir: dir.clone(),
            source,
        };
        let mut sync = false;
        for batch in &self.queued {
            self.wal
                .append(&batch.entries, batch.hard_state.as_ref())
                .map_err(&wal_error)?;
            sync |= batch.sync;
        }
        if sync {
            // One fsync covers every batch appended above (group commit).
            self.wal.sync().map_err(&wal_error)?;
        }
        Ok(self
            .queued
            .drain(..)
            .map(|batch| Completion::of(&batch))
            .collect())
    }

    fn max_wait(&self) -> Option<Duration> {
        // Queued batches are written only when the loop comes back to
        // `completed`, so it must not block while it has any.
        if !self.stalled && !self.queued.is_empty() {
            Some(Duration::ZERO)
        } else {
            None
        }
    }
}

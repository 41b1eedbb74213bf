//! Storage that owns the write-ahead log on a dedicated writer thread.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Completion, LogStorage, PersistBatch, StorageError};
use crate::wal::{Disk, Wal, WalError};

/// A callback that wakes the event loop from the writer thread, such as
/// `transport_epoll::Waker::wake`. It must not block.
pub type WakeFn = Box<dyn Fn() + Send>;

/// How long the event loop may block while batches are outstanding when no
/// [`WakeFn`] was given, so that it still notices completions soon.
pub(super) const POLL_INTERVAL_WITHOUT_WAKE: Duration = Duration::from_millis(1);

/// A [`LogStorage`] whose writes and fsyncs run on a writer thread, so the
/// event loop keeps ticking while the disk is slow.
///
/// The thread takes every batch that is waiting, appends them in order and
/// fsyncs once for all of them (group commit), then reports them and calls
/// the [`WakeFn`]. After a failed write or fsync it reports the error and
/// stops: nothing submitted after the failed batch completes.
///
/// Dropping the storage lets the thread write the batches already submitted
/// and waits for it, so a drop blocks while the disk hangs.
pub struct ThreadedStorage {
    /// `None` only during drop, to close the channel before the join.
    batches: Option<Sender<PersistBatch>>,
    completions: Receiver<Result<Completion, StorageError>>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
    /// Batches submitted and not yet returned by `completed`.
    outstanding: usize,
    /// Whether the writer thread wakes the event loop on completion.
    wakes_loop: bool,
}

impl ThreadedStorage {
    /// Moves an opened and recovered WAL that lives in `dir` to a new writer
    /// thread. `wake` runs on that thread after each group of completions
    /// and after a failure. Without it, [`LogStorage::max_wait`] bounds the
    /// event loop's wait to 1 ms while batches are outstanding.
    ///
    /// # Errors
    ///
    /// Returns [`StorageError::Spawn`] when the thread cannot be started.
    pub fn spawn<D>(
        wal: Wal<D>,
        dir: PathBuf,
        wake: Option<WakeFn>,
    ) -> Result<ThreadedStorage, StorageError>
    where
        D: Disk + Send + 'static,
        D::File: Send,
    {
        let (batch_sender, batch_receiver) = mpsc::channel();
        let (completion_sender, completion_receiver) = mpsc::channel();
        let wakes_loop = wake.is_some();
        let writer = Writer {
            wal,
            dir: dir.clone(),
            batches: batch_receiver,
            completions: completion_sender,
            wake: wake.unwrap_or_else(|| Box::new(|| {})),
        };
        let writer = std::thread::Builder::new()
            .name("raftd-wal".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| StorageError::Spawn {
                dir: dir.clone(),
                source,
            })?;
        Ok(ThreadedStorage {
            batches: Some(batch_sender),
            completions: completion_receiver,
            writer: Some(writer),
            dir,
            outstanding: 0,
            wakes_loop,
        })
    }

    /// Returns the error the writer thread reported, or
    /// [`StorageError::WriterStopped`] when it ended without one.
    fn writer_failure(&mut self) -> StorageError {
        while let Ok(result) = self.completions.try_recv() {
            if let Err(error) = result {
                return error;
            }
        }
        StorageError::WriterStopped {
            dir: self.dir.clone(),
        }
    }
}

impl LogStorage for ThreadedStorage {
    fn submit(&mut self, batch: PersistBatch) -> Result<(), StorageError> {
        let Some(batches) = &self.batches else {
            return Err(self.writer_failure());
        };
        if batches.send(batch).is_err() {
            // The receiver is gone only when the writer thread ended.
            return Err(self.writer_failure());
        }
        self.outstanding += 1;
        Ok(())
    }

    fn completed(&mut self) -> Result<Vec<Completion>, StorageError> {
        let mut done = Vec::new();
        loop {
            match self.completions.try_recv() {
                Ok(Ok(completion)) => {
                    self.outstanding -= 1;
                    done.push(completion);
                }
                Ok(Err(error)) => return Err(error),
                Err(TryRecvError::Empty) => return Ok(done),
                Err(TryRecvError::Disconnected) if self.outstanding > 0 => {
                    return Err(StorageError::WriterStopped {
                        dir: self.dir.clone(),
                    });
                }
                Err(TryRecvError::Disconnected) => return Ok(done),
            }
        }
    }

    fn max_wait(&self) -> Option<Duration> {
        if self.wakes_loop || self.outstanding == 0 {
            None
        } else {
            Some(POLL_INTERVAL_WITHOUT_WAKE)
        }
    }
}

impl Drop for ThreadedStorage {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has written
        // what was submitted.
        self.batches = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "write-ahead log thread panicked");
        }
    }
}

impl std::fmt::Debug for ThreadedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedStorage")
            .field("dir", &self.dir)
            .field("outstanding", &self.outstanding)
            .field("wakes_loop", &self.wakes_loop)
            .finish_non_exhaustive()
    }
}

/// The writer thread's state.
struct Writer<D: Disk> {
    wal: Wal<D>,
    dir: PathBuf,
    batches: Receiver<PersistBatch>,
    completions: Sender<Result<Completion, StorageError>>,
    wake: WakeFn,
}

impl<D: Disk> Writer<D> {
    fn run(mut self) {
        // `recv` fails once the storage is dropped and every batch sent
        // before the drop was taken.
        while let Ok(first) = self.batches.recv() {
            let mut group = vec![first];
            group.extend(self.batches.try_iter());
            if let Err(source) = self.write_group(&group) {
                tracing::error!(
                    dir = %self.dir.display(),
                    first_batch = group[0].id.0,
                    batches = group.len(),
                    error = %source,
                    "write-ahead log write failed"
                );
                let error = StorageError::Wal {
                    dir: self.dir.clone(),
                    source,
                };
                // A send fails only when the storage is gone, and then no
                // caller waits for the error.
                let _ = self.completions.send(Err(error));
                (self.wake)();
                return;
            }
            for batch in &group {
                if self.completions.send(Ok(Completion::of(batch))).is_err() {
                    return;
                }
            }
            (self.wake)();
        }
    }

    /// Appends every batch of `group` and fsyncs once if any needs it.
    fn write_group(&mut self, group: &[PersistBatch]) -> Result<(), WalError> {
        let mut sync = false;
        for batch in group {
            self.wal.append(&batch.entries, batch.hard_state.as_ref())?;
            sync |= batch.sync;
        }
        if sync {
            self.wal.sync()?;
        }
        Ok(())
    }
}

//! Persistence of the Raft log off the event loop: the driver hands each
//! `Ready`'s entries and hard state to a [`LogStorage`] and learns later, from
//! [`LogStorage::completed`], which batches are durable.
//!
//! Two implementations exist:
//!
//! - [`ThreadedStorage`] owns the write-ahead log on a dedicated thread. It
//!   appends every batch that is waiting and fsyncs once for all of them
//!   (group commit), then reports them and wakes the event loop.
//! - [`InlineStorage`] writes on the caller's thread, inside
//!   [`LogStorage::completed`], so the single-threaded simulator stays
//!   deterministic. Tests can stall it to model a disk that hangs.
//!
//! `Node` is generic over its storage rather than holding a
//! `Box<dyn LogStorage>`, so that tests and the simulator reach the concrete
//! type (to stall an [`InlineStorage`], for example) through
//! `Node::storage_mut` without a downcast. The loop calls the trait a few
//! times per turn, so dispatch cost plays no part in the choice.
//!
//! Recovery is not part of this module: `Node` opens and replays the
//! [`Wal`](crate::wal::Wal) before it builds the storage around it.

mod in_flight;
mod inline;
mod threaded;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use raft_core::{Entry, HardState, LogIndex, Term};

use crate::wal::WalError;

pub use in_flight::{HeldWork, InFlight, Outgoing, Released};
pub use inline::InlineStorage;
pub use threaded::{ThreadedStorage, WakeFn};

/// The number the driver gives each batch, increasing by one per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The entries and hard state of one `Ready`, to be written to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistBatch {
    pub id: BatchId,
    /// Entries to append. The first may replace stored entries from its
    /// index on, as in [`Wal::append`](crate::wal::Wal::append).
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    /// Whether the batch needs an fsync before it counts as complete
    /// (`Ready::must_sync`).
    pub sync: bool,
}

impl PersistBatch {
    /// Returns the index and term of the last entry, if the batch has any.
    pub fn last_entry(&self) -> Option<(LogIndex, Term)> {
        self.entries.last().map(|entry| (entry.index, entry.term))
    }
}

/// A batch that is written and, if it asked for it, fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: BatchId,
    /// Index and term of the batch's last entry, for
    /// [`RawNode::on_persisted`](raft_core::RawNode::on_persisted).
    pub last_entry: Option<(LogIndex, Term)>,
}

impl Completion {
    fn of(batch: &PersistBatch) -> Completion {
        Completion {
            id: batch.id,
            last_entry: batch.last_entry(),
        }
    }
}

/// Errors that stop the node's persistence, and with it the node.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A write or fsync failed. The log rejects every later write, because
    /// the kernel may have dropped the unwritten pages.
    #[error("write-ahead log in {dir}: {source}")]
    Wal {
        dir: PathBuf,
        #[source]
        source: WalError,
    },
    /// The writer thread ended without reporting an error, which means it
    /// panicked.
    #[error(
        "the write-ahead log thread for {dir} panicked. Its message is on standard error. Restart the node"
    )]
    WriterStopped { dir: PathBuf },
    #[error("failed to start the write-ahead log thread for {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A storage reported batches in another order than they were
    /// submitted, which breaks the contract of [`LogStorage::completed`].
    #[error(
        "storage completed batch {completed}, but the oldest outstanding batch is {expected:?}"
    )]
    OutOfOrder {
        completed: BatchId,
        expected: Option<BatchId>,
    },
}

/// Durable storage of the Raft log, written off the event loop.
///
/// Batches complete in submission order, and a completed batch implies that
/// every earlier batch is durable too.
pub trait LogStorage {
    /// Queues one `Ready`'s entries and hard state for writing. Returns
    /// without waiting for the disk.
    ///
    /// # Errors
    ///
    /// Returns an error when an earlier write failed or the writer stopped.
    fn submit(&mut self, batch: PersistBatch) -> Result<(), StorageError>;

    /// Returns the batches completed since the last call, in submission
    /// order. A storage without its own thread does its writes here.
    ///
    /// # Errors
    ///
    /// Returns the error of a failed write or fsync. Nothing after that
    /// batch ever completes, so the node must stop.
    fn completed(&mut self) -> Result<Vec<Completion>, StorageError>;

    /// The maximum time the event loop may block in the transport before it
    /// calls [`completed`](LogStorage::completed) again, or `None` when the
    /// storage wakes the loop itself or has nothing outstanding.
    fn max_wait(&self) -> Option<Duration>;
}

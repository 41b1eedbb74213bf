//! The driver's record of batches submitted to storage and not yet durable,
//! with the work that waits for each: messages that depend on local
//! persistence, and committed entries to apply.

use std::collections::VecDeque;

use raft_core::{Entry, LogIndex, Message, MessageBody, Term};
use transport::{ConnId, RequestId};

use super::{BatchId, Completion, StorageError};

/// A message the core produced, ready for the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Request(Message),
    /// A response, already paired with the peer request it responds to. The
    /// pairing happens when the core produces the response, because the core
    /// responds to each peer's requests in arrival order.
    Response {
        conn: ConnId,
        id: RequestId,
        message: Message,
    },
}

impl Outgoing {
    /// Returns whether the message may leave only after every batch
    /// submitted so far is durable.
    ///
    /// Responses (AppendEntries acknowledgments, votes) report state the
    /// receiver relies on, and a RequestVote claims a term, a vote and a log
    /// that must survive a crash. Every response waits, including those
    /// that depend on nothing durable, so that responses leave in the order
    /// the core produced them. A leader's AppendEntries goes at once: the
    /// leader counts its own entries toward commit only after
    /// `RawNode::on_persisted`. PreVote, TimeoutNow, ReadIndex and
    /// ReadIndexReply change no voter's durable state. Any other message
    /// waits.
    pub fn waits_for_durability(&self) -> bool {
        match self {
            Outgoing::Response { .. } => true,
            Outgoing::Request(message) => !matches!(
                message.body,
                MessageBody::AppendEntries { .. }
                    | MessageBody::PreVote { .. }
                    | MessageBody::TimeoutNow
                    | MessageBody::ReadIndex { .. }
                    | MessageBody::ReadIndexReply { .. }
            ),
        }
    }
}

/// Work released once a batch and every earlier one are durable.
#[derive(Debug, Default)]
pub struct HeldWork {
    /// Messages in the order the core produced them.
    pub messages: Vec<Outgoing>,
    /// Committed entries to apply, in log order. The entries are durable
    /// already, but the commit index that covers them is durable only with
    /// the batch, and the state machine must not run ahead of it: a restart
    /// rebuilds the state machine up to the durable commit index, and the
    /// applied index must never move backwards across a restart.
    pub committed: Vec<Entry>,
}

impl HeldWork {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.committed.is_empty()
    }
}

#[derive(Debug)]
struct InFlightBatch {
    id: BatchId,
    last_entry: Option<(LogIndex, Term)>,
    held: HeldWork,
}

/// Batches submitted to storage and not yet completed, oldest first.
#[derive(Debug, Default)]
pub struct InFlight {
    batches: VecDeque<InFlightBatch>,
    next_id: u64,
}

/// What a completion releases.
#[derive(Debug)]
pub struct Released {
    /// The batch's last entry, to report through `RawNode::on_persisted`.
    pub last_entry: Option<(LogIndex, Term)>,
    pub held: HeldWork,
}

impl InFlight {
    /// Returns the id for the next batch.
    pub fn allocate_id(&mut self) -> BatchId {
        self.next_id += 1;
        BatchId(self.next_id)
    }

    /// Records a submitted batch and the work that waits for it.
    pub fn push(&mut self, id: BatchId, last_entry: Option<(LogIndex, Term)>, held: HeldWork) {
        self.batches.push_back(InFlightBatch {
            id,
            last_entry,
            held,
        });
    }

    /// Queues `work` behind the newest outstanding batch, so it is released
    /// after that batch and in order with the work already held. Returns
    /// `work` when no batch is outstanding: it may go at once.
    pub fn hold_behind_newest(&mut self, work: HeldWork) -> Option<HeldWork> {
        let Some(newest) = self.batches.back_mut() else {
            return Some(work);
        };
        newest.held.messages.extend(work.messages);
        newest.held.committed.extend(work.committed);
        None
    }

    /// Removes the oldest batch, which `completion` must name.
    ///
    /// # Errors
    ///
    /// Returns [`StorageError::OutOfOrder`] when the completion names
    /// another batch.
    pub fn complete(&mut self, completion: Completion) -> Result<Released, StorageError> {
        let expected = self.batches.front().map(|batch| batch.id);
        if expected != Some(completion.id) {
            return Err(StorageError::OutOfOrder {
                completed: completion.id,
                expected,
            });
        }
        let batch = self.batches.pop_front().expect("checked above");
        Ok(Released {
            last_entry: batch.last_entry,
            held: batch.held,
        })
    }

    /// Number of batches submitted and not yet completed.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

use crate::message::Message;
use crate::types::{Entry, HardState, LogIndex};

/// The outcome of a [`RawNode::read_index`](crate::RawNode::read_index)
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context, as given to `read_index`.
    pub context: u64,
    /// Serve the read once the state machine has applied this index. `None`
    /// when leadership could not be confirmed: the read must fail or retry.
    pub index: Option<LogIndex>,
}

/// The work a node's inputs produced, handed out by
/// [`RawNode::ready`](crate::RawNode::ready).
///
/// Carry it out in field order: persist, send, apply, then call
/// [`RawNode::advance`](crate::RawNode::advance).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The new hard state, when it changed since the last `Ready`.
    pub hard_state: Option<HardState>,
    /// Entries to append to the durable log. The first entry's index may be
    /// at or below the stored last index: stored entries from that index on
    /// must be discarded first.
    pub entries: Vec<Entry>,
    /// Whether `hard_state` and `entries` must be fsynced before the messages
    /// are sent. True whenever either is present: the commit index is made
    /// durable too, so that it never moves backwards across a restart.
    pub must_sync: bool,
    /// Messages to send once the above is persisted, in order.
    pub messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in order. They are
    /// all durable already.
    pub committed_entries: Vec<Entry>,
    /// Reads whose index is now known, or that failed.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}

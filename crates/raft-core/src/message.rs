//! Messages exchanged between Raft nodes.
//!
//! Every message is either a request or the response to one. A node returns
//! exactly one response for each request it steps, in the order the requests
//! arrived from that sender, so a transport can pair them without ids in the
//! messages themselves.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIndex, NodeId, Term};

/// A message from one node to another, stamped with the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageBody {
    /// A candidate asks for a vote. The voter grants it only if the
    /// candidate's log is at least as up to date as its own.
    RequestVote {
        last_log_index: LogIndex,
        last_log_term: Term,
        /// Set when the leader handed over with TimeoutNow: voters then
        /// grant the vote even though they heard from that leader recently.
        #[serde(default)]
        transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
    },
    /// A pre-vote: would the receiver vote for the sender in the term the
    /// message carries? The receiver changes no state. A node that cannot
    /// win this way does not raise its term, so it cannot depose a leader.
    PreVote {
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    /// A granted pre-vote carries the term it was asked for, and a
    /// rejection carries the voter's own term.
    PreVoteResponse {
        granted: bool,
    },
    /// The leader replicates `entries`, which follow the entry at
    /// `prev_log_index` with term `prev_log_term`. An empty `entries` is a
    /// heartbeat.
    AppendEntries {
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// The leader's read round when it sent this message. The response
        /// echoes it, which confirms the leader's term for reads up to it.
        #[serde(default)]
        read_round: u64,
    },
    /// On success, `match_index` is the last index the follower has durably
    /// stored that matches the leader's log.
    ///
    /// On rejection, `conflict_term` is the term of the follower's entry at
    /// the leader's `prev_log_index` and `reject_hint` the first index of
    /// that term in the follower's log, so that the leader skips a whole
    /// divergent term per round trip. When the follower's log is too short
    /// to have that entry, `conflict_term` is absent and `reject_hint` is
    /// the follower's last index.
    AppendEntriesResponse {
        success: bool,
        match_index: LogIndex,
        reject_hint: LogIndex,
        last_index: LogIndex,
        #[serde(default)]
        conflict_term: Option<Term>,
        #[serde(default)]
        read_round: u64,
    },
    /// Sent by a leader handing over leadership: the receiver starts an
    /// election at once.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client
    /// read `context`. The leader replies later with a
    /// [`MessageBody::ReadIndexReply`] request.
    ReadIndex {
        context: u64,
    },
    /// The leader's answer to a [`MessageBody::ReadIndex`]: the index the
    /// read must wait for, or `None` when the leader could not confirm its
    /// leadership.
    ReadIndexReply {
        context: u64,
        index: Option<LogIndex>,
    },
    /// The immediate response to a request whose real answer, if any,
    /// travels as a request of its own: TimeoutNow, ReadIndex and
    /// ReadIndexReply.
    Ack,
}

impl MessageBody {
    /// Whether this body is a request, which the receiver must answer with
    /// exactly one response.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVote { .. }
                | MessageBody::PreVote { .. }
                | MessageBody::AppendEntries { .. }
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndex { .. }
                | MessageBody::ReadIndexReply { .. }
        )
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { .. } => "request_vote",
            MessageBody::RequestVoteResponse { .. } => "request_vote_response",
            MessageBody::AppendEntries { .. } => "append_entries",
            MessageBody::AppendEntriesResponse { .. } => "append_entries_response",
            MessageBody::PreVote { .. } => "pre_vote",
            MessageBody::PreVoteResponse { .. } => "pre_vote_response",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::ReadIndex { .. } => "read_index",
            MessageBody::ReadIndexReply { .. } => "read_index_reply",
            MessageBody::Ack => "ack",
        }
    }
}

impl Message {
    pub fn is_request(&self) -> bool {
        self.body.is_request()
    }
}

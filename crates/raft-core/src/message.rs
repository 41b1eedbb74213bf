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
    },
    RequestVoteResponse {
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
    },
    /// On success, `match_index` is the last index the follower has durably
    /// stored that matches the leader's log. On rejection, `reject_hint` is
    /// the highest index at which the leader should try next, and
    /// `last_index` is the follower's last log index.
    AppendEntriesResponse {
        success: bool,
        match_index: LogIndex,
        reject_hint: LogIndex,
        last_index: LogIndex,
    },
}

impl MessageBody {
    /// Whether this body is a request, which the receiver must answer with
    /// exactly one response.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVote { .. } | MessageBody::AppendEntries { .. }
        )
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { .. } => "request_vote",
            MessageBody::RequestVoteResponse { .. } => "request_vote_response",
            MessageBody::AppendEntries { .. } => "append_entries",
            MessageBody::AppendEntriesResponse { .. } => "append_entries_response",
        }
    }
}

impl Message {
    pub fn is_request(&self) -> bool {
        self.body.is_request()
    }
}

//! The client protocol spoken on a node's client port.

use raft_core::{LogIndex, NodeId, Role, Term};
use serde::{Deserialize, Serialize};

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientRequest {
    Put {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
        #[serde(with = "raft_core::base64_bytes")]
        value: Vec<u8>,
    },
    /// A linearizable read.
    Get {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
    },
    Delete {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
    },
    /// Compare-and-swap: sets `key` to `value` only if its current value is
    /// `expected`, where `None` means the key is absent.
    Cas {
        #[serde(with = "raft_core::base64_bytes")]
        key: Vec<u8>,
        #[serde(with = "raft_core::base64_bytes::option")]
        expected: Option<Vec<u8>>,
        #[serde(with = "raft_core::base64_bytes")]
        value: Vec<u8>,
    },
    /// The node's own view of the cluster. Any node serves it, leader or not.
    Status,
    /// Hands leadership to node `target`. The leader answers
    /// [`ClientResponse::TransferStarted`] at once; the transfer completes,
    /// or is abandoned, within an election timeout.
    MoveLeader { target: NodeId },
}

impl ClientRequest {
    pub fn name(&self) -> &'static str {
        match self {
            ClientRequest::Put { .. } => "put",
            ClientRequest::Get { .. } => "get",
            ClientRequest::Delete { .. } => "delete",
            ClientRequest::Cas { .. } => "cas",
            ClientRequest::Status => "status",
            ClientRequest::MoveLeader { .. } => "move_leader",
        }
    }
}

/// A node's reply to a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClientResponse {
    /// A put was committed and applied at `index`.
    Written {
        index: LogIndex,
    },
    /// The value of the key, or `None` when the key is absent.
    Value {
        #[serde(with = "raft_core::base64_bytes::option")]
        value: Option<Vec<u8>>,
    },
    /// A delete was committed and applied. `existed` is whether the key had
    /// a value.
    Deleted {
        index: LogIndex,
        existed: bool,
    },
    /// A compare-and-swap was committed and applied. `current` is the value
    /// the key had before it, so a failed swap shows what it found.
    Swapped {
        index: LogIndex,
        succeeded: bool,
        #[serde(with = "raft_core::base64_bytes::option")]
        current: Option<Vec<u8>>,
    },
    Status(NodeStatus),
    /// The leader started handing leadership to `target`.
    TransferStarted {
        target: NodeId,
    },
    /// This node is not the leader. `leader_client_addr` is the client
    /// address of the leader this node last heard from, if any.
    NotLeader {
        leader_id: Option<NodeId>,
        leader_client_addr: Option<String>,
    },
    Error {
        kind: ClientErrorKind,
        message: String,
    },
}

/// The class of a failed client request, which tells the client whether a
/// retry can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientErrorKind {
    /// Leadership changed before the request's entry committed; the request
    /// may or may not have taken effect. Retrying is safe for idempotent
    /// requests.
    Unavailable,
    /// The request is malformed or exceeds a limit; retrying will not help.
    InvalidRequest,
    /// The node failed internally, for example on a disk error.
    Internal,
}

/// A node's status, as `raftctl status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader_id: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
}

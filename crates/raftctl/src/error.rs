use std::io;
use std::time::Duration;

use raft_core::NodeId;
use transport::{ClientErrorKind, FrameError};

/// Errors returned by [`Client`](crate::Client) calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to {endpoint} failed: {source}")]
    Io {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("request to {endpoint} timed out")]
    Timeout { endpoint: String },
    #[error("{endpoint} rejected the handshake: {reason}")]
    Handshake { endpoint: String, reason: String },
    #[error("invalid frame from {endpoint}: {source}")]
    Frame {
        endpoint: String,
        #[source]
        source: FrameError,
    },
    #[error("{endpoint} is not the leader and knows no leader (last known: {leader_id:?})")]
    NotLeader {
        endpoint: String,
        leader_id: Option<NodeId>,
    },
    #[error("{endpoint} returned {kind:?}: {message}")]
    Server {
        endpoint: String,
        kind: ClientErrorKind,
        message: String,
    },
    #[error("{endpoint} returned an unexpected response: {response}")]
    UnexpectedResponse { endpoint: String, response: String },
    #[error(
        "node {target} did not become leader within {timeout:?}; check that it is running and caught up, then retry"
    )]
    TransferTimedOut { target: NodeId, timeout: Duration },
    #[error(
        "no leader answered within {timeout:?}{}; check that a majority of nodes is running, or raise --timeout",
        last_error.as_ref().map(|error| format!(" (last error: {error})")).unwrap_or_default()
    )]
    NoLeader {
        timeout: Duration,
        last_error: Option<Box<ClientError>>,
    },
}

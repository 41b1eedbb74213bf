use std::io;

use raft_core::NodeId;

use crate::ConnId;

/// A frame that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("invalid frame body: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("failed to encode frame: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Why a connection's handshake was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("unknown protocol {found:?}, expected {expected:?}")]
    Protocol {
        found: String,
        expected: &'static str,
    },
    #[error("unsupported protocol version {found}, this node speaks {supported}")]
    Version { found: u32, supported: u32 },
    #[error("unsupported codec {found:?}, this node speaks {supported:?}")]
    Codec {
        found: String,
        supported: &'static str,
    },
    #[error(
        "the connecting node's cluster id {found:?} differs from the accepting node's {expected:?}; give both the same --initial-cluster and --initial-cluster-token"
    )]
    ClusterId { found: String, expected: String },
    #[error("node {0} is not a member of this cluster")]
    UnknownNode(NodeId),
    #[error("remote node claims id {0}, which is this node's own id")]
    SelfConnection(NodeId),
}

/// Errors returned by [`Transport`](crate::Transport) calls.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection {0:?} is closed")]
    ConnectionClosed(ConnId),
    #[error("node {0} is not a known peer")]
    UnknownPeer(NodeId),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("failed to bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;

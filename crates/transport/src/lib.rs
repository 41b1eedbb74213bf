//! The transport between raftd nodes and between clients and nodes.
//!
//! A connection has one of two roles, decided by who opened it:
//!
//! - An **accepted** connection (the ServerSocket role) was opened by the
//!   remote end. The node reads requests from it and writes one response per
//!   request back on it. Requests arrive as [`Event::PeerRequest`] or
//!   [`Event::ClientRequest`] and are answered with
//!   [`Transport::respond_peer`] or [`Transport::respond_client`].
//! - An **initiated** connection (the ClientSocket role) was opened by this
//!   node to a peer. The node sends requests on it with
//!   [`Transport::send`] and reads their responses, which arrive as
//!   [`Event::PeerResponse`]. A request whose response does not arrive within
//!   the request timeout is sent again, up to the configured number of
//!   attempts, and then reported as [`Event::RequestFailed`]. A broken
//!   connection is re-established with exponential backoff, and requests
//!   still within their attempts are sent again on the new connection.
//!
//! Every connection starts with a [`handshake::Hello`] from the initiating
//! side. Frames are length-prefixed JSON (see [`frame`]). After the
//! handshake, each frame is an [`Envelope`] whose `id` pairs a response with
//! its request.

pub mod accept;
pub mod client;
mod error;
pub mod frame;
pub mod handshake;
pub mod requests;

use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use serde::{Deserialize, Serialize};

pub use client::{ClientErrorKind, ClientRequest, ClientResponse, NodeStatus};
pub use error::{FrameError, HandshakeError, Result, TransportError};

/// Identifies an accepted connection for as long as it is open. Ids are not
/// reused within one transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// Pairs a response with its request on one connection. Chosen by the side
/// that sends the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// The frame that carries every request and response after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: RequestId,
    pub body: T,
}

/// A cluster member's peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub id: NodeId,
    /// `HOST:PORT` for TCP; any unique name for the in-memory network.
    pub addr: String,
}

/// Settings every transport shares.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub node_id: NodeId,
    /// Peers present a matching cluster id in their handshake.
    pub cluster_id: String,
    /// Every member of the cluster, this node included.
    pub members: Vec<PeerAddr>,
    /// Time to wait for a response before sending a request again.
    pub request_timeout: Duration,
    /// Attempts per request, the first included, before
    /// [`Event::RequestFailed`]. At least 1.
    pub max_attempts: u32,
    /// First delay before reconnecting a broken initiated connection. The
    /// delay doubles on each failure up to `reconnect_backoff_max`.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// Requests queued for one peer beyond this count fail at once with
    /// [`Event::RequestFailed`], so a dead peer cannot grow memory.
    pub max_queued_requests: usize,
    pub max_peer_frame: usize,
    pub max_client_frame: usize,
    /// Accepted connections beyond this count are closed right after accept.
    pub max_connections: usize,
}

impl TransportConfig {
    /// A configuration with the defaults raftd uses.
    pub fn new(node_id: NodeId, cluster_id: String, members: Vec<PeerAddr>) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id,
            members,
            request_timeout: Duration::from_millis(500),
            max_attempts: 2,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(1000),
            max_queued_requests: 4096,
            max_peer_frame: frame::MAX_PEER_FRAME,
            max_client_frame: frame::MAX_CLIENT_FRAME,
            max_connections: 1024,
        }
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.iter().map(|member| member.id).collect()
    }
}

/// Something the transport observed during [`Transport::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A Raft request from peer `from` on an accepted connection. Answer with
    /// [`Transport::respond_peer`] using the same `conn` and `id`.
    PeerRequest {
        conn: ConnId,
        id: RequestId,
        from: NodeId,
        message: Message,
    },
    /// A client request on an accepted connection of the client port. Answer
    /// with [`Transport::respond_client`].
    ClientRequest {
        conn: ConnId,
        id: RequestId,
        request: ClientRequest,
    },
    /// The response to a request sent with [`Transport::send`]. A response
    /// arrives at most once per request id; duplicates caused by retries are
    /// dropped by the transport.
    PeerResponse {
        peer: NodeId,
        id: RequestId,
        message: Message,
    },
    /// A request sent with [`Transport::send`] got no response after all its
    /// attempts, or its queue was full.
    RequestFailed { peer: NodeId, id: RequestId },
    /// An accepted connection closed. Responses to its requests that are not
    /// yet written are dropped.
    ConnectionClosed { conn: ConnId },
}

/// A transport joins one node to its peers and clients.
///
/// Calls never block except [`Transport::poll`], which waits up to its
/// timeout for events. All methods are called from the node's one event loop
/// thread.
pub trait Transport {
    /// The current time on this transport's clock: the monotonic clock for a
    /// real network, a virtual clock for a simulated one. All deadlines the
    /// caller computes must come from this clock.
    fn now(&self) -> Instant;

    /// Queues a Raft request to `peer` on the initiated connection to it,
    /// opening the connection if needed. Returns at once; the response, or
    /// the failure, arrives later as an event.
    ///
    /// # Errors
    ///
    /// Returns [`TransportError::UnknownPeer`] when `peer` is not a member,
    /// and a [`FrameError`] when the message cannot be encoded within the
    /// peer frame limit.
    fn send(&mut self, peer: NodeId, message: Message) -> Result<RequestId>;

    /// Writes the response to a peer request read from accepted connection
    /// `conn`.
    ///
    /// # Errors
    ///
    /// Returns [`TransportError::ConnectionClosed`] when `conn` has closed;
    /// the response is dropped and the peer retries on its side.
    fn respond_peer(&mut self, conn: ConnId, id: RequestId, message: Message) -> Result<()>;

    /// Writes the response to a client request.
    ///
    /// # Errors
    ///
    /// As [`Transport::respond_peer`].
    fn respond_client(
        &mut self,
        conn: ConnId,
        id: RequestId,
        response: ClientResponse,
    ) -> Result<()>;

    /// Does pending network work and appends what happened to `events`.
    /// Waits at most `timeout` for the first event (`None` waits without
    /// limit) but never past the next retry or reconnect deadline, which
    /// the transport handles itself. A simulated transport returns at once.
    ///
    /// Errors on one connection close that connection and are logged; they
    /// are not returned.
    ///
    /// # Errors
    ///
    /// Returns an error only when the transport as a whole cannot go on, for
    /// example when the poller fails.
    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> Result<()>;
}

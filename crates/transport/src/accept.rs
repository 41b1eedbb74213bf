//! What every transport does with the frames of an accepted connection: the
//! handshake first, then requests.

use raft_core::{Message, NodeId};

use crate::handshake::{Hello, HelloReply};
use crate::{
    ClientRequest, ConnId, Envelope, Event, FrameError, HandshakeError, TransportConfig, frame,
};

/// The outcome of a connection's first frame.
#[derive(Debug)]
pub struct HelloOutcome {
    /// The reply to send before anything else, accepted or not.
    pub reply: HelloReply,
    /// The peer's id on the peer port, `None` on the client port, or why
    /// the connection must close once the reply is sent.
    pub result: Result<Option<NodeId>, HandshakeError>,
}

/// Checks the hello that opens an accepted connection: a peer hello on the
/// peer port (`peer_port`), a client hello on the client port.
///
/// # Errors
///
/// Returns [`FrameError::Decode`] when the frame is not a hello at all; the
/// connection closes without a reply.
pub fn accept_hello(
    body: &[u8],
    peer_port: bool,
    config: &TransportConfig,
) -> Result<HelloOutcome, FrameError> {
    let hello: Hello = frame::decode(body)?;
    let result = if peer_port {
        hello
            .check_peer(&config.cluster_id, config.node_id, &config.member_ids())
            .map(Some)
    } else {
        hello.check_client().map(|()| None)
    };
    let reply = HelloReply {
        accepted: result.is_ok(),
        node_id: Some(config.node_id),
        error: result.as_ref().err().map(ToString::to_string),
    };
    Ok(HelloOutcome { reply, result })
}

/// Decodes a request read from accepted connection `conn` after its
/// handshake: a Raft message from `peer`, or a client request when the
/// connection came in on the client port (`peer` is `None`).
///
/// # Errors
///
/// Returns [`FrameError::Decode`] when the body is not such a request.
pub fn decode_request(
    conn: ConnId,
    peer: Option<NodeId>,
    body: &[u8],
) -> Result<Event, FrameError> {
    Ok(match peer {
        Some(from) => {
            let envelope: Envelope<Message> = frame::decode(body)?;
            Event::PeerRequest {
                conn,
                id: envelope.id,
                from,
                message: envelope.body,
            }
        }
        None => {
            let envelope: Envelope<ClientRequest> = frame::decode(body)?;
            Event::ClientRequest {
                conn,
                id: envelope.id,
                request: envelope.body,
            }
        }
    })
}

//! An accepted connection (the ServerSocket role) on the simulated network:
//! reads the handshake and then requests.

use std::time::{Duration, Instant};

use raft_core::NodeId;
use transport::accept;
use transport::frame::{self, FrameDecoder};
use transport::{ConnId, FrameError, HandshakeError};

use crate::network::{NetConnId, Port};
use crate::transport::Context;

/// Time a new connection has to send its handshake, as on TCP.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason an accepted connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("handshake rejected: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("no handshake within {0:?}")]
    HandshakeTimedOut(Duration),
}

#[derive(Debug)]
pub(crate) struct Accepted {
    conn: NetConnId,
    port: Port,
    /// The peer's id once a peer handshake passed, or `None` on the client
    /// port.
    peer: Option<NodeId>,
    handshaken: bool,
    /// Set once the connection is closing: after a rejected handshake, the
    /// reply is still delivered before the close.
    closing: bool,
    handshake_deadline: Instant,
    decoder: FrameDecoder,
}

impl Accepted {
    pub(crate) fn new(conn: NetConnId, port: Port, context: &Context<'_>) -> Accepted {
        let max_frame = match port {
            Port::Peer => context.config.max_peer_frame,
            Port::Client => context.config.max_client_frame,
        };
        Accepted {
            conn,
            port,
            peer: None,
            handshaken: false,
            closing: false,
            handshake_deadline: context.now() + HANDSHAKE_TIMEOUT,
            decoder: FrameDecoder::new(max_frame),
        }
    }

    pub(crate) fn handshaken(&self) -> bool {
        self.handshaken
    }

    /// Returns the largest frame a response may have, or `None` when the
    /// connection takes no responses.
    pub(crate) fn response_frame_limit(&self) -> Option<usize> {
        (self.handshaken && !self.closing).then(|| self.decoder.max_len())
    }

    /// Reads the bytes of one packet and emits the requests they complete.
    ///
    /// # Errors
    ///
    /// Returns why the connection must be closed: an invalid or oversized
    /// frame.
    pub(crate) fn receive(
        &mut self,
        bytes: &[u8],
        context: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        if self.closing {
            return Ok(());
        }
        self.decoder.extend(bytes);
        while let Some(body) = self.decoder.next_frame()? {
            if self.closing {
                break;
            }
            if self.handshaken {
                self.handle_request(&body, context)?;
            } else {
                self.handle_hello(&body, context)?;
            }
        }
        Ok(())
    }

    fn handle_hello(&mut self, body: &[u8], context: &mut Context<'_>) -> Result<(), CloseReason> {
        let outcome = accept::accept_hello(body, self.port == Port::Peer, context.config)?;
        let mut bytes = Vec::new();
        frame::encode(&outcome.reply, context.config.max_client_frame, &mut bytes)?;
        context.net.send(self.conn, false, bytes, true);
        match outcome.result {
            Ok(peer) => {
                self.peer = peer;
                self.handshaken = true;
            }
            Err(error) => {
                // The reply carries the reason to the other side, so it
                // arrives before the close.
                tracing::warn!(
                    conn = self.conn,
                    remote = %context.net.remote_name(self.conn, context.endpoint),
                    %error,
                    "rejecting handshake"
                );
                self.closing = true;
                context.net.close_after_flush(self.conn);
            }
        }
        Ok(())
    }

    fn handle_request(&self, body: &[u8], context: &mut Context<'_>) -> Result<(), CloseReason> {
        let event = accept::decode_request(ConnId(self.conn), self.peer, body)?;
        context.events.push(event);
        Ok(())
    }

    /// Returns the handshake deadline while the handshake is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        (!self.handshaken && !self.closing).then_some(self.handshake_deadline)
    }

    /// Returns why the connection must close when it sent no handshake in
    /// time.
    pub(crate) fn check_handshake_deadline(&self, now: Instant) -> Option<CloseReason> {
        let late = !self.handshaken && !self.closing && self.handshake_deadline <= now;
        late.then_some(CloseReason::HandshakeTimedOut(HANDSHAKE_TIMEOUT))
    }
}

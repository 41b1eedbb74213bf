//! An accepted connection (the ServerSocket role): reads the handshake and
//! then requests, and writes the responses back.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use raft_core::NodeId;
use transport::accept;
use transport::frame::{self, FrameDecoder};
use transport::{ConnId, Event, FrameError};

use crate::handler::{Context, Handler, Status};
use crate::listener::Port;
use crate::stream::{self, ReadOutcome};

/// Bytes of responses an accepted connection may leave unread before it is
/// closed.
const MAX_PENDING_OUTPUT: usize = 64 * 1024 * 1024;

/// Time a new connection has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason an accepted connection is closed.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("handshake rejected: {0}")]
    Handshake(#[from] transport::HandshakeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub(crate) struct Accepted {
    key: usize,
    port: Port,
    stream: TcpStream,
    remote: SocketAddr,
    decoder: FrameDecoder,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The peer's id once a peer handshake passed; `None` on the client port.
    peer: Option<NodeId>,
    handshaken: bool,
    /// After a rejected handshake, the reply is flushed and then the
    /// connection closes.
    closing: bool,
    handshake_deadline: Instant,
}

impl Accepted {
    pub(crate) fn new(
        key: usize,
        port: Port,
        stream: TcpStream,
        remote: SocketAddr,
        context: &Context<'_>,
    ) -> Accepted {
        let max_frame = match port {
            Port::Peer => context.config.max_peer_frame,
            Port::Client => context.config.max_client_frame,
        };
        Accepted {
            key,
            port,
            stream,
            remote,
            decoder: FrameDecoder::new(max_frame),
            input: Vec::new(),
            output: Vec::new(),
            peer: None,
            handshaken: false,
            closing: false,
            handshake_deadline: context.now + HANDSHAKE_TIMEOUT,
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn read_frames(&mut self, context: &mut Context<'_>) -> Result<bool, CloseReason> {
        self.input.clear();
        let outcome = stream::read_available(&mut self.stream, &mut self.input)?;
        self.decoder.extend(&self.input);
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
        Ok(matches!(outcome, ReadOutcome::Open))
    }

    fn handle_hello(&mut self, body: &[u8], context: &mut Context<'_>) -> Result<(), CloseReason> {
        let outcome = accept::accept_hello(body, self.port == Port::Peer, context.config)?;
        frame::encode(
            &outcome.reply,
            context.config.max_client_frame,
            &mut self.output,
        )?;
        match outcome.result {
            Ok(peer) => {
                self.peer = peer;
                self.handshaken = true;
            }
            Err(error) => {
                // Send the reason before closing, so the other side can log it.
                tracing::warn!(
                    conn = self.key,
                    port = self.port.name(),
                    remote = %self.remote,
                    %error,
                    "rejecting handshake"
                );
                self.closing = true;
            }
        }
        Ok(())
    }

    fn handle_request(
        &mut self,
        body: &[u8],
        context: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        let event = accept::decode_request(ConnId(self.key as u64), self.peer, body)?;
        context.events.push(event);
        Ok(())
    }

    fn flush_and_rearm(&mut self, context: &mut Context<'_>) -> Result<(), CloseReason> {
        stream::write_buffered(&mut self.stream, &mut self.output)?;
        let interest = stream::interest(self.key, !self.output.is_empty());
        context.poller.modify(&self.stream, interest)?;
        Ok(())
    }

    fn close(&self, reason: Option<&CloseReason>) -> Status {
        match reason {
            Some(reason) => tracing::warn!(
                conn = self.key,
                port = self.port.name(),
                remote = %self.remote,
                error = %reason,
                "closing connection after an error"
            ),
            None => tracing::debug!(conn = self.key, remote = %self.remote, "connection closed"),
        }
        Status::Closed
    }
}

impl Handler for Accepted {
    fn key(&self) -> usize {
        self.key
    }

    fn on_ready(&mut self, event: polling::Event, context: &mut Context<'_>) -> Status {
        if event.readable {
            match self.read_frames(context) {
                Ok(true) => {}
                Ok(false) => return self.close(None),
                Err(reason) => return self.close(Some(&reason)),
            }
        }
        if let Err(reason) = self.flush_and_rearm(context) {
            return self.close(Some(&reason));
        }
        if self.closing && self.output.is_empty() {
            return Status::Closed;
        }
        Status::Open
    }

    fn deadline(&self) -> Option<Instant> {
        (!self.handshaken || self.closing).then_some(self.handshake_deadline)
    }

    fn on_timer(&mut self, context: &mut Context<'_>) -> Status {
        if context.now < self.handshake_deadline {
            return Status::Open;
        }
        if self.closing {
            return Status::Closed;
        }
        tracing::warn!(
            conn = self.key,
            port = self.port.name(),
            remote = %self.remote,
            "closing connection that sent no handshake in time"
        );
        Status::Closed
    }

    fn on_removed(&mut self, context: &mut Context<'_>) {
        let _ = context.poller.delete(&self.stream);
        *context.accepted -= 1;
        if self.handshaken {
            context.events.push(Event::ConnectionClosed {
                conn: ConnId(self.key as u64),
            });
        }
    }

    fn queue_response(&mut self, bytes: &[u8], context: &mut Context<'_>) -> bool {
        self.output.extend_from_slice(bytes);
        if let Err(error) = self.flush_and_rearm(context) {
            // The next readiness event reports the broken socket, which
            // closes it.
            tracing::debug!(conn = self.key, %error, "write failed");
        }
        if self.output.len() > MAX_PENDING_OUTPUT {
            // A remote end that sends requests but never reads the responses
            // must not grow this node's memory without bound.
            tracing::warn!(
                conn = self.key,
                remote = %self.remote,
                pending = self.output.len(),
                max = MAX_PENDING_OUTPUT,
                "closing connection that does not read its responses"
            );
            self.output = Vec::new();
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        true
    }

    fn response_frame_limit(&self) -> Option<usize> {
        (self.handshaken && !self.closing).then(|| self.decoder.max_len())
    }
}

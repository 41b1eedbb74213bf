//! The initiated connection to one peer (the ClientSocket role) on the
//! simulated network: sends requests, resends those whose response is late,
//! and reconnects with backoff when the connection breaks.

use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use transport::frame::{self, FrameDecoder};
use transport::handshake::{Hello, HelloReply};
use transport::{Envelope, Event, FrameError, RequestId, TransportConfig};

use crate::network::NetConnId;
use crate::transport::Context;
use transport::requests::Requests;

/// The reason a peer connection failed or was dropped.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("connection refused")]
    Refused,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer rejected the handshake: {0}")]
    Rejected(String),
    #[error("connection closed")]
    Closed,
    #[error("handshake timed out")]
    TimedOut,
    #[error("no response within all attempts of a request")]
    Unresponsive,
}

#[derive(Debug)]
pub(crate) struct Initiated {
    peer: NodeId,
    addr: String,
    conn: Option<NetConnId>,
    handshaken: bool,
    /// When an unanswered handshake gives up.
    handshake_deadline: Instant,
    decoder: FrameDecoder,
    requests: Requests,
    backoff: Duration,
    reconnect_at: Instant,
    /// Connection failures since the last successful handshake. Only the
    /// first one is logged as a warning.
    failures: u32,
    /// Whether the current run of requests rejected by a full queue was
    /// logged already.
    queue_full_logged: bool,
}

impl Initiated {
    pub(crate) fn new(peer: NodeId, addr: String, config: &TransportConfig, now: Instant) -> Self {
        Initiated {
            peer,
            addr,
            conn: None,
            handshaken: false,
            handshake_deadline: now,
            decoder: FrameDecoder::new(config.max_peer_frame),
            requests: Requests::new(config),
            backoff: config.reconnect_backoff_min,
            reconnect_at: now,
            failures: 0,
            queue_full_logged: false,
        }
    }

    /// Returns the current connection, if any.
    pub(crate) fn conn(&self) -> Option<NetConnId> {
        self.conn
    }

    /// Queues an encoded request. Writes it at once when the connection is
    /// handshaken, connects when there is no connection and no backoff delay
    /// pending, and fails it at once when the peer's queue is full.
    pub(crate) fn queue(&mut self, id: RequestId, bytes: Vec<u8>, context: &mut Context<'_>) {
        let now = context.now();
        if !self.requests.push(id, bytes, now) {
            if !self.queue_full_logged {
                tracing::warn!(
                    peer = self.peer.0,
                    max = context.config.max_queued_requests,
                    "peer queue is full, failing requests"
                );
                self.queue_full_logged = true;
            }
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
            return;
        }
        self.queue_full_logged = false;
        if self.handshaken {
            self.write_queued(context);
        } else if self.conn.is_none() && self.reconnect_at <= now {
            self.connect(context);
        }
    }

    fn connect(&mut self, context: &mut Context<'_>) {
        let Some(conn) = context.net.connect(context.endpoint, &self.addr) else {
            self.fail(ConnectionError::Refused, context);
            return;
        };
        let config = context.config;
        self.conn = Some(conn);
        self.handshaken = false;
        self.handshake_deadline = context.now() + config.request_timeout;
        self.decoder = FrameDecoder::new(config.max_peer_frame);
        let hello = Hello::peer(&config.cluster_id, config.node_id);
        let mut bytes = Vec::new();
        match frame::encode(&hello, config.max_peer_frame, &mut bytes) {
            Ok(()) => context.net.send(conn, true, bytes, true),
            Err(error) => {
                tracing::error!(peer = self.peer.0, %error, "failed to encode the handshake");
            }
        }
    }

    fn write_queued(&mut self, context: &mut Context<'_>) {
        let Some(conn) = self.conn else {
            return;
        };
        let now = context.now();
        let net = &mut *context.net;
        self.requests
            .write_queued(now, |bytes| net.send(conn, true, bytes.to_vec(), false));
    }

    /// Logs a connection failure, resets the connection, and schedules a
    /// reconnect.
    fn fail(&mut self, error: ConnectionError, context: &mut Context<'_>) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(peer = self.peer.0, addr = %self.addr, %error, "peer connection failed");
        } else {
            tracing::debug!(
                peer = self.peer.0,
                addr = %self.addr,
                failures = self.failures,
                %error,
                "peer connection failed again"
            );
        }
        if let Some(conn) = self.conn {
            context.net.reset(conn);
        }
        self.disconnect(context);
    }

    /// Drops the connection, fails the requests on their last attempt,
    /// queues the others for the next connection, and schedules a reconnect
    /// with backoff.
    fn disconnect(&mut self, context: &mut Context<'_>) {
        let now = context.now();
        self.conn = None;
        self.handshaken = false;
        for id in self.requests.connection_lost(now) {
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
        }
        self.reconnect_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(context.config.reconnect_backoff_max);
    }

    /// Handles the close of the current connection, seen at a poll.
    pub(crate) fn closed(&mut self, context: &mut Context<'_>) {
        self.fail(ConnectionError::Closed, context);
    }

    /// Reads the bytes of one packet from the current connection.
    pub(crate) fn receive(&mut self, bytes: &[u8], context: &mut Context<'_>) {
        self.decoder.extend(bytes);
        if let Err(error) = self.read_frames(context) {
            self.fail(error, context);
        }
    }

    fn read_frames(&mut self, context: &mut Context<'_>) -> Result<(), ConnectionError> {
        while let Some(body) = self.decoder.next_frame()? {
            if !self.handshaken {
                let reply: HelloReply = frame::decode(&body)?;
                if !reply.accepted {
                    return Err(ConnectionError::Rejected(reply.error.unwrap_or_default()));
                }
                self.handshaken = true;
                self.backoff = context.config.reconnect_backoff_min;
                tracing::debug!(
                    peer = self.peer.0,
                    addr = %self.addr,
                    failures = self.failures,
                    "connected to peer"
                );
                self.failures = 0;
                self.write_queued(context);
                continue;
            }
            let envelope: Envelope<Message> = frame::decode(&body)?;
            // A retried request can get two responses, and only the first
            // counts.
            if self.requests.complete(envelope.id) {
                context.events.push(Event::PeerResponse {
                    peer: self.peer,
                    id: envelope.id,
                    message: envelope.body,
                });
            }
        }
        Ok(())
    }

    /// Returns the earliest time at which [`Initiated::on_timer`] has work.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let connection = match self.conn {
            None => self.requests.has_queued().then_some(self.reconnect_at),
            Some(_) if !self.handshaken => Some(self.handshake_deadline),
            Some(_) => None,
        };
        [connection, self.requests.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Resends or fails late requests, gives up on a late handshake, and
    /// reconnects when requests wait and the backoff delay has passed.
    pub(crate) fn on_timer(&mut self, context: &mut Context<'_>) {
        let now = context.now();
        let mut resend = Vec::new();
        let expired = self
            .requests
            .expire(now, |bytes| resend.push(bytes.to_vec()));
        for id in expired.failed {
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
        }

        match self.conn {
            None => {
                if self.requests.has_queued() && self.reconnect_at <= now {
                    self.connect(context);
                }
            }
            Some(_) if !self.handshaken => {
                if self.handshake_deadline <= now {
                    self.fail(ConnectionError::TimedOut, context);
                }
            }
            Some(conn) => {
                // A peer that responds to no request within all its attempts is
                // likely gone without closing the connection, so reconnect
                // instead of waiting on it, as the TCP transport does.
                if expired.in_flight_failed {
                    self.fail(ConnectionError::Unresponsive, context);
                } else {
                    for bytes in resend {
                        context.net.send(conn, true, bytes, false);
                    }
                }
            }
        }
    }
}

//! An initiated connection to one peer (the ClientSocket role): sends
//! requests, resends those whose response is late, and reconnects with
//! backoff when the connection breaks.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use socket2::{Domain, Protocol, Socket, Type};
use transport::frame::{self, FrameDecoder};
use transport::handshake::{Hello, HelloReply};
use transport::{Envelope, Event, RequestId};

use crate::handler::{Context, Handler, Status};
use crate::stream::{self, ReadOutcome};

/// A request waiting for its response.
struct Outstanding {
    id: RequestId,
    /// The encoded frame, kept for resending.
    bytes: Vec<u8>,
    attempts: u32,
    /// When to resend, or to give up once the attempts are used.
    deadline: Instant,
}

enum State {
    /// No socket; the next connect happens at `retry_at`.
    Disconnected {
        retry_at: Instant,
    },
    /// A nonblocking connect is under way; writability reports its end.
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    /// Connected; the hello is sent and the reply has not arrived yet.
    Handshaking {
        stream: TcpStream,
        deadline: Instant,
    },
    Ready {
        stream: TcpStream,
    },
}

pub(crate) struct Initiated {
    key: usize,
    peer: NodeId,
    addr: String,
    state: State,
    decoder: FrameDecoder,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Requests not yet written on the current connection, oldest first.
    queued: VecDeque<Outstanding>,
    /// Requests written on the current connection.
    in_flight: BTreeMap<RequestId, Outstanding>,
    backoff: Duration,
}

impl Initiated {
    pub(crate) fn new(key: usize, peer: NodeId, addr: String, context: &Context<'_>) -> Initiated {
        Initiated {
            key,
            peer,
            addr,
            state: State::Disconnected {
                retry_at: context.now,
            },
            decoder: FrameDecoder::new(context.config.max_peer_frame),
            input: Vec::new(),
            output: Vec::new(),
            queued: VecDeque::new(),
            in_flight: BTreeMap::new(),
            backoff: context.config.reconnect_backoff_min,
        }
    }

    /// Queues an encoded request and writes it at once when the connection
    /// is ready, or connects when there is none.
    pub(crate) fn queue(&mut self, id: RequestId, bytes: Vec<u8>, context: &mut Context<'_>) {
        let config = context.config;
        if self.queued.len() + self.in_flight.len() >= config.max_queued_requests {
            tracing::warn!(
                peer = self.peer.0,
                "peer queue is full, failing the request"
            );
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
            return;
        }
        // A request that never reaches a connection fails once the time of
        // all its attempts has passed.
        let deadline = context.now + config.request_timeout * config.max_attempts;
        self.queued.push_back(Outstanding {
            id,
            bytes,
            attempts: 0,
            deadline,
        });
        match self.state {
            State::Ready { .. } => self.write_queued(context),
            State::Disconnected { retry_at } if retry_at <= context.now => self.connect(context),
            _ => {}
        }
    }

    fn connect(&mut self, context: &mut Context<'_>) {
        match self.start_connect(context) {
            Ok(stream) => {
                let deadline = context.now + context.config.request_timeout;
                self.state = State::Connecting { stream, deadline };
            }
            Err(error) => {
                tracing::debug!(peer = self.peer.0, addr = %self.addr, %error, "connect failed");
                self.schedule_reconnect(context);
            }
        }
    }

    fn start_connect(&mut self, context: &mut Context<'_>) -> io::Result<TcpStream> {
        let addr: SocketAddr = self.addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing")
        })?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
        let stream: TcpStream = socket.into();
        // SAFETY: the stream is owned by this handler, which deletes it from
        // the poller before dropping it.
        unsafe {
            context
                .poller
                .add(&stream, polling::Event::writable(self.key))?
        };
        Ok(stream)
    }

    /// Drops the connection, puts its unanswered requests back at the front
    /// of the queue, and schedules a reconnect with backoff.
    fn disconnect(&mut self, context: &mut Context<'_>) {
        self.take_stream(context);
        let in_flight = std::mem::take(&mut self.in_flight);
        for (_, outstanding) in in_flight.into_iter().rev() {
            self.queued.push_front(outstanding);
        }
        self.output.clear();
        self.schedule_reconnect(context);
    }

    fn take_stream(&mut self, context: &mut Context<'_>) {
        let state = std::mem::replace(
            &mut self.state,
            State::Disconnected {
                retry_at: context.now,
            },
        );
        if let State::Connecting { stream, .. }
        | State::Handshaking { stream, .. }
        | State::Ready { stream } = state
        {
            let _ = context.poller.delete(&stream);
        }
    }

    fn schedule_reconnect(&mut self, context: &mut Context<'_>) {
        self.state = State::Disconnected {
            retry_at: context.now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(context.config.reconnect_backoff_max);
    }

    fn stream_mut(&mut self) -> Option<&mut TcpStream> {
        match &mut self.state {
            State::Disconnected { .. } => None,
            State::Connecting { stream, .. }
            | State::Handshaking { stream, .. }
            | State::Ready { stream } => Some(stream),
        }
    }

    /// Moves queued requests into the output buffer and writes it.
    fn write_queued(&mut self, context: &mut Context<'_>) {
        let now = context.now;
        let timeout = context.config.request_timeout;
        while let Some(mut outstanding) = self.queued.pop_front() {
            outstanding.attempts += 1;
            outstanding.deadline = now + timeout;
            self.output.extend_from_slice(&outstanding.bytes);
            self.in_flight.insert(outstanding.id, outstanding);
        }
        if let Err(error) = self.flush_and_rearm(context) {
            tracing::debug!(peer = self.peer.0, %error, "write to peer failed");
            self.disconnect(context);
        }
    }

    fn flush_and_rearm(&mut self, context: &mut Context<'_>) -> io::Result<()> {
        let key = self.key;
        let mut output = std::mem::take(&mut self.output);
        let result = match self.stream_mut() {
            Some(stream) => stream::write_buffered(stream, &mut output).and_then(|()| {
                context
                    .poller
                    .modify(&*stream, stream::interest(key, !output.is_empty()))
            }),
            None => Ok(()),
        };
        self.output = output;
        result
    }

    /// Handles the end of a nonblocking connect. Writability alone does not
    /// prove the connection: a refused connect shows as the socket's
    /// pending error or as a failing `peer_addr`.
    fn finish_connect(&mut self, context: &mut Context<'_>) {
        let State::Connecting { stream, .. } = &self.state else {
            return;
        };
        let confirmed = match stream.take_error() {
            Ok(None) => stream.peer_addr().map(|_| ()),
            Ok(Some(error)) | Err(error) => Err(error),
        };
        if let Err(error) = confirmed {
            tracing::debug!(peer = self.peer.0, addr = %self.addr, %error, "connect failed");
            self.disconnect(context);
            return;
        }
        let State::Connecting { stream, .. } = std::mem::replace(
            &mut self.state,
            State::Disconnected {
                retry_at: context.now,
            },
        ) else {
            unreachable!("checked above");
        };
        self.decoder = FrameDecoder::new(context.config.max_peer_frame);
        let hello = Hello::peer(&context.config.cluster_id, context.config.node_id);
        self.output.clear();
        if let Err(error) = frame::encode(&hello, context.config.max_peer_frame, &mut self.output) {
            tracing::error!(%error, "failed to encode the handshake");
        }
        let deadline = context.now + context.config.request_timeout;
        self.state = State::Handshaking { stream, deadline };
        if let Err(error) = self.flush_and_rearm(context) {
            tracing::debug!(peer = self.peer.0, %error, "write to peer failed");
            self.disconnect(context);
        }
    }

    fn read_responses(&mut self, context: &mut Context<'_>) -> Result<(), String> {
        self.input.clear();
        let mut input = std::mem::take(&mut self.input);
        let outcome = match self.stream_mut() {
            Some(stream) => stream::read_available(stream, &mut input),
            None => Ok(ReadOutcome::Open),
        };
        self.decoder.extend(&input);
        self.input = input;
        let outcome = outcome.map_err(|error| error.to_string())?;

        while let Some(body) = self
            .decoder
            .next_frame()
            .map_err(|error| error.to_string())?
        {
            if matches!(self.state, State::Handshaking { .. }) {
                let reply: HelloReply = frame::decode(&body).map_err(|error| error.to_string())?;
                if !reply.accepted {
                    return Err(format!(
                        "peer rejected the handshake: {}",
                        reply.error.unwrap_or_default()
                    ));
                }
                let State::Handshaking { stream, .. } = std::mem::replace(
                    &mut self.state,
                    State::Disconnected {
                        retry_at: context.now,
                    },
                ) else {
                    unreachable!("checked above");
                };
                self.state = State::Ready { stream };
                self.backoff = context.config.reconnect_backoff_min;
                tracing::debug!(peer = self.peer.0, addr = %self.addr, "connected to peer");
                self.write_queued(context);
                continue;
            }
            let envelope: Envelope<Message> =
                frame::decode(&body).map_err(|error| error.to_string())?;
            // A retried request can get two responses, and only the first counts.
            if self.in_flight.remove(&envelope.id).is_some() {
                context.events.push(Event::PeerResponse {
                    peer: self.peer,
                    id: envelope.id,
                    message: envelope.body,
                });
            }
        }
        match outcome {
            ReadOutcome::Open => Ok(()),
            ReadOutcome::Eof => Err("peer closed the connection".to_owned()),
        }
    }
}

impl Handler for Initiated {
    fn key(&self) -> usize {
        self.key
    }

    fn on_ready(&mut self, event: polling::Event, context: &mut Context<'_>) -> Status {
        if matches!(self.state, State::Connecting { .. }) {
            if event.writable || event.readable {
                self.finish_connect(context);
            }
            return Status::Open;
        }
        if event.readable
            && let Err(error) = self.read_responses(context)
        {
            tracing::warn!(peer = self.peer.0, addr = %self.addr, %error, "peer connection failed");
            self.disconnect(context);
            return Status::Open;
        }
        if let Err(error) = self.flush_and_rearm(context) {
            tracing::debug!(peer = self.peer.0, %error, "write to peer failed");
            self.disconnect(context);
        }
        Status::Open
    }

    fn deadline(&self) -> Option<Instant> {
        let state_deadline = match &self.state {
            State::Disconnected { retry_at } => {
                let waiting = !self.queued.is_empty() || !self.in_flight.is_empty();
                waiting.then_some(*retry_at)
            }
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                Some(*deadline)
            }
            State::Ready { .. } => None,
        };
        let requests = self
            .in_flight
            .values()
            .chain(self.queued.iter())
            .map(|outstanding| outstanding.deadline)
            .min();
        [state_deadline, requests].into_iter().flatten().min()
    }

    fn on_timer(&mut self, context: &mut Context<'_>) -> Status {
        let now = context.now;
        let max_attempts = context.config.max_attempts;
        let timeout = context.config.request_timeout;

        // Resend late requests on the same connection, or fail them once
        // their attempts are used up.
        let late: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, outstanding)| outstanding.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut unresponsive = false;
        for id in late {
            let outstanding = self.in_flight.get_mut(&id).expect("listed above");
            if outstanding.attempts >= max_attempts {
                self.in_flight.remove(&id);
                context.events.push(Event::RequestFailed {
                    peer: self.peer,
                    id,
                });
                unresponsive = true;
            } else {
                outstanding.attempts += 1;
                outstanding.deadline = now + timeout;
                self.output.extend_from_slice(&outstanding.bytes);
            }
        }
        while self
            .queued
            .front()
            .is_some_and(|outstanding| outstanding.deadline <= now)
        {
            let outstanding = self.queued.pop_front().expect("checked above");
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id: outstanding.id,
            });
        }

        match &self.state {
            State::Disconnected { retry_at } => {
                let waiting = !self.queued.is_empty() || !self.in_flight.is_empty();
                if waiting && *retry_at <= now {
                    self.connect(context);
                }
            }
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                if *deadline <= now {
                    tracing::debug!(peer = self.peer.0, addr = %self.addr, "connect timed out");
                    self.disconnect(context);
                }
            }
            State::Ready { .. } => {
                // A peer that responds to no request within all its attempts
                // is as good as gone, so reconnect instead of waiting on it.
                if unresponsive {
                    tracing::debug!(peer = self.peer.0, "reconnecting to unresponsive peer");
                    self.disconnect(context);
                } else if let Err(error) = self.flush_and_rearm(context) {
                    tracing::debug!(peer = self.peer.0, %error, "write to peer failed");
                    self.disconnect(context);
                }
            }
        }
        Status::Open
    }

    fn on_removed(&mut self, context: &mut Context<'_>) {
        self.take_stream(context);
    }

    fn as_initiated(&mut self) -> Option<&mut Initiated> {
        Some(self)
    }
}

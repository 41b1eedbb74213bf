//! An initiated connection to one peer (the ClientSocket role): sends
//! requests, resends those whose response is late, and reconnects with
//! backoff when the connection breaks.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use socket2::{Domain, Protocol, Socket, Type};
use transport::frame::{self, FrameDecoder};
use transport::handshake::{Hello, HelloReply};
use transport::{Envelope, Event, FrameError, RequestId};

use crate::handler::{Context, Handler, Status};
use crate::stream::{self, ReadOutcome};
use transport::requests::Requests;

enum State {
    /// No socket. The next connect happens at `retry_at` if requests wait.
    Disconnected {
        retry_at: Instant,
    },
    /// A nonblocking connect is under way, and writability reports its end.
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    /// Connected. The hello is sent and the reply has not arrived yet.
    Handshaking {
        stream: TcpStream,
        deadline: Instant,
    },
    Ready {
        stream: TcpStream,
    },
}

/// The reason a peer connection failed or was dropped.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer rejected the handshake: {0}")]
    Rejected(String),
    #[error("peer closed the connection")]
    Closed,
    #[error("connect or handshake timed out")]
    TimedOut,
    #[error("no response within all attempts of a request")]
    Unresponsive,
}

pub(crate) struct Initiated {
    key: usize,
    peer: NodeId,
    addr: String,
    state: State,
    decoder: FrameDecoder,
    input: Vec<u8>,
    output: Vec<u8>,
    requests: Requests,
    backoff: Duration,
    /// Connection failures since the last successful handshake. Only the
    /// first one is logged as a warning, so a dead peer does not flood the
    /// log.
    failures: u32,
    /// Whether the current run of requests rejected by a full queue was
    /// logged already.
    queue_full_logged: bool,
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
            requests: Requests::new(context.config),
            backoff: context.config.reconnect_backoff_min,
            failures: 0,
            queue_full_logged: false,
        }
    }

    /// Queues an encoded request. Writes it at once when the connection is
    /// ready, connects when there is no connection and no backoff delay
    /// pending, and fails it at once when the peer's queue is full.
    pub(crate) fn queue(&mut self, id: RequestId, bytes: Vec<u8>, context: &mut Context<'_>) {
        if !self.requests.push(id, bytes, context.now) {
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
            Err(error) => self.fail(ConnectionError::Io(error), context),
        }
    }

    fn start_connect(&mut self, context: &mut Context<'_>) -> io::Result<TcpStream> {
        // NOTE: a host name in the member address is resolved here, on the
        // event loop thread, and the lookup blocks. Addresses written as
        // IP:PORT resolve without a lookup.
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

    /// Logs a connection failure and drops the connection.
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
        self.disconnect(context);
    }

    /// Drops the connection, fails the requests on their last attempt,
    /// queues the others for the next connection, and schedules a reconnect
    /// with backoff.
    fn disconnect(&mut self, context: &mut Context<'_>) {
        if let Some(stream) = self.take_stream(context) {
            let _ = context.poller.delete(&stream);
        }
        self.output.clear();
        for id in self.requests.connection_lost(context.now) {
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
        }
        self.state = State::Disconnected {
            retry_at: context.now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(context.config.reconnect_backoff_max);
    }

    fn take_stream(&mut self, context: &Context<'_>) -> Option<TcpStream> {
        let state = std::mem::replace(
            &mut self.state,
            State::Disconnected {
                retry_at: context.now,
            },
        );
        match state {
            State::Disconnected { .. } => None,
            State::Connecting { stream, .. }
            | State::Handshaking { stream, .. }
            | State::Ready { stream } => Some(stream),
        }
    }

    fn stream_mut(&mut self) -> Option<&mut TcpStream> {
        match &mut self.state {
            State::Disconnected { .. } => None,
            State::Connecting { stream, .. }
            | State::Handshaking { stream, .. }
            | State::Ready { stream } => Some(stream),
        }
    }

    /// Starts an attempt for every queued request and writes them.
    fn write_queued(&mut self, context: &mut Context<'_>) {
        let output = &mut self.output;
        self.requests
            .write_queued(context.now, |bytes| output.extend_from_slice(bytes));
        if let Err(error) = self.flush_and_rearm(context) {
            self.fail(error.into(), context);
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
    /// prove the connection, because a refused connect also makes the socket
    /// writable. The socket's pending error (SO_ERROR) and `peer_addr`
    /// confirm it.
    fn finish_connect(&mut self, context: &mut Context<'_>) {
        let State::Connecting { stream, .. } = &self.state else {
            return;
        };
        let confirmed = match stream.take_error() {
            Ok(None) => stream.peer_addr().map(|_| ()),
            Ok(Some(error)) | Err(error) => Err(error),
        };
        if let Err(error) = confirmed {
            self.fail(error.into(), context);
            return;
        }
        let Some(stream) = self.take_stream(context) else {
            return;
        };
        self.decoder = FrameDecoder::new(context.config.max_peer_frame);
        self.output.clear();
        let hello = Hello::peer(&context.config.cluster_id, context.config.node_id);
        if let Err(error) = frame::encode(&hello, context.config.max_peer_frame, &mut self.output) {
            tracing::error!(peer = self.peer.0, %error, "failed to encode the handshake");
        }
        let deadline = context.now + context.config.request_timeout;
        self.state = State::Handshaking { stream, deadline };
        if let Err(error) = self.flush_and_rearm(context) {
            self.fail(error.into(), context);
        }
    }

    fn read_responses(&mut self, context: &mut Context<'_>) -> Result<(), ConnectionError> {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        let outcome = match self.stream_mut() {
            Some(stream) => stream::read_available(stream, &mut input),
            None => Ok(ReadOutcome::Open),
        };
        self.decoder.extend(&input);
        self.input = input;
        let outcome = outcome?;

        while let Some(body) = self.decoder.next_frame()? {
            if matches!(self.state, State::Handshaking { .. }) {
                self.handle_hello_reply(&body, context)?;
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
        match outcome {
            ReadOutcome::Open => Ok(()),
            ReadOutcome::Eof => Err(ConnectionError::Closed),
        }
    }

    fn handle_hello_reply(
        &mut self,
        body: &[u8],
        context: &mut Context<'_>,
    ) -> Result<(), ConnectionError> {
        let reply: HelloReply = frame::decode(body)?;
        if !reply.accepted {
            return Err(ConnectionError::Rejected(reply.error.unwrap_or_default()));
        }
        let Some(stream) = self.take_stream(context) else {
            return Ok(());
        };
        self.state = State::Ready { stream };
        self.backoff = context.config.reconnect_backoff_min;
        tracing::info!(
            peer = self.peer.0,
            addr = %self.addr,
            failures = self.failures,
            "connected to peer"
        );
        self.failures = 0;
        self.write_queued(context);
        Ok(())
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
            self.fail(error, context);
            return Status::Open;
        }
        if let Err(error) = self.flush_and_rearm(context) {
            self.fail(error.into(), context);
        }
        Status::Open
    }

    fn deadline(&self) -> Option<Instant> {
        let state_deadline = match &self.state {
            State::Disconnected { retry_at } => self.requests.has_queued().then_some(*retry_at),
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                Some(*deadline)
            }
            State::Ready { .. } => None,
        };
        [state_deadline, self.requests.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_timer(&mut self, context: &mut Context<'_>) -> Status {
        let now = context.now;
        let mut resend = Vec::new();
        let expired = self
            .requests
            .expire(now, |bytes| resend.extend_from_slice(bytes));
        for id in expired.failed {
            context.events.push(Event::RequestFailed {
                peer: self.peer,
                id,
            });
        }

        match &self.state {
            State::Disconnected { retry_at } => {
                if self.requests.has_queued() && *retry_at <= now {
                    self.connect(context);
                }
            }
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                if *deadline <= now {
                    self.fail(ConnectionError::TimedOut, context);
                }
            }
            State::Ready { .. } => {
                // A peer that responds to no request within all its attempts is
                // likely gone without closing the connection (a half-open
                // connection), so reconnect instead of waiting on it.
                if expired.in_flight_failed {
                    self.fail(ConnectionError::Unresponsive, context);
                } else if !resend.is_empty() {
                    self.output.extend_from_slice(&resend);
                    if let Err(error) = self.flush_and_rearm(context) {
                        self.fail(error.into(), context);
                    }
                }
            }
        }
        Status::Open
    }

    fn on_removed(&mut self, context: &mut Context<'_>) {
        if let Some(stream) = self.take_stream(context) {
            let _ = context.poller.delete(&stream);
        }
    }

    fn as_initiated(&mut self) -> Option<&mut Initiated> {
        Some(self)
    }
}

//! [`Transport`] on real TCP, driven by epoll through the `polling` crate.
//!
//! One thread runs everything. Every socket is registered with the poller
//! under a key, and the key leads to the handler object for that socket: a
//! [`listener`] for each of the peer and client ports, an [`accepted`]
//! connection for each remote end that connected to this node, and an
//! [`initiated`] connection for each peer. The loop in
//! [`EpollTransport::poll`] hands each readiness event to the handler of its
//! key, then lets handlers whose deadlines passed (handshake and request
//! timeouts, reconnects) act. Those deadlines bound the poller's wait, so no
//! timer thread is needed.
//!
//! The poller reports a registration once until it is modified (oneshot),
//! so each handler re-arms its interest after every event: readable always,
//! writable only while it has output pending.
//!
//! Another thread can end a wait in `poll` early through a [`Waker`], for
//! example when the write-ahead log thread finishes an fsync.

mod accepted;
mod handler;
mod initiated;
mod listener;
mod stream;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::{Events, Poller};
use raft_core::{Message, NodeId};
use serde::Serialize;
use transport::frame;
use transport::{
    ClientResponse, ConnId, Envelope, Event, RequestId, Result, Transport, TransportConfig,
    TransportError,
};

use crate::handler::{Context, Handler, Status};
use crate::initiated::Initiated;
use crate::listener::{Listener, Port};

/// A node's transport on TCP.
pub struct EpollTransport {
    /// Shared with every [`Waker`].
    poller: Arc<Poller>,
    config: TransportConfig,
    handlers: BTreeMap<usize, Box<dyn Handler>>,
    /// The key of each peer's initiated connection.
    peer_keys: BTreeMap<NodeId, usize>,
    next_key: usize,
    accepted: usize,
    next_request: u64,
    peer_addr: SocketAddr,
    client_addr: SocketAddr,
    poll_events: Events,
    /// Events produced outside `poll`, returned by the next `poll`.
    pending_events: Vec<Event>,
}

impl EpollTransport {
    /// Binds the peer and client listeners and prepares an initiated
    /// connection for every other member. Nothing connects until the first
    /// request to a peer.
    ///
    /// # Errors
    ///
    /// Returns [`TransportError::Bind`] when an address cannot be bound, and
    /// an IO error when the poller cannot be created.
    pub fn bind(
        config: TransportConfig,
        peer_listen: SocketAddr,
        client_listen: SocketAddr,
    ) -> Result<EpollTransport> {
        let poller = Arc::new(Poller::new()?);
        let mut transport = EpollTransport {
            poller,
            handlers: BTreeMap::new(),
            peer_keys: BTreeMap::new(),
            next_key: 0,
            accepted: 0,
            next_request: 1,
            peer_addr: peer_listen,
            client_addr: client_listen,
            poll_events: Events::new(),
            pending_events: Vec::new(),
            config,
        };
        transport.peer_addr = transport.listen(Port::Peer, peer_listen)?;
        transport.client_addr = transport.listen(Port::Client, client_listen)?;

        let peers: Vec<(NodeId, String)> = transport
            .config
            .members
            .iter()
            .filter(|member| member.id != transport.config.node_id)
            .map(|member| (member.id, member.addr.clone()))
            .collect();
        for (peer, addr) in peers {
            let key = transport.next_key;
            transport.next_key += 1;
            let initiated = {
                let mut events = Vec::new();
                let context = transport.context(&mut events);
                Initiated::new(key, peer, addr, &context)
            };
            transport.handlers.insert(key, Box::new(initiated));
            transport.peer_keys.insert(peer, key);
        }
        Ok(transport)
    }

    /// Returns a handle that wakes this transport's [`poll`](Transport::poll)
    /// from any thread.
    pub fn waker(&self) -> Waker {
        Waker {
            poller: Arc::clone(&self.poller),
        }
    }

    /// Returns the bound peer address, with the actual port when bound to
    /// port 0.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Returns the bound client address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    fn listen(&mut self, port: Port, addr: SocketAddr) -> Result<SocketAddr> {
        let bind_error = |source| TransportError::Bind {
            addr: addr.to_string(),
            source,
        };
        let socket = TcpListener::bind(addr).map_err(bind_error)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let key = self.next_key;
        self.next_key += 1;
        let listener = Listener::new(key, port, socket);
        // SAFETY: the listener is owned by its handler, which the transport
        // drops only after deleting it from the poller.
        unsafe {
            self.poller
                .add(listener.socket(), polling::Event::readable(key))?
        };
        self.handlers.insert(key, Box::new(listener));
        tracing::info!(port = port.name(), addr = %local, "listening");
        Ok(local)
    }

    fn context<'a>(&'a mut self, events: &'a mut Vec<Event>) -> Context<'a> {
        Context::new(
            &self.poller,
            &self.config,
            events,
            &mut self.next_key,
            &mut self.accepted,
        )
    }

    fn respond<T: Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let key = conn.0 as usize;
        // A key of a listener or an initiated connection is no open
        // accepted connection either.
        let Some((handler, max_frame)) = self
            .handlers
            .get_mut(&key)
            .and_then(|handler| handler.response_frame_limit().map(|max| (handler, max)))
        else {
            return Err(TransportError::ConnectionClosed(conn));
        };
        let mut bytes = Vec::new();
        frame::encode(value, max_frame, &mut bytes)?;
        let mut events = Vec::new();
        let mut context = Context::new(
            &self.poller,
            &self.config,
            &mut events,
            &mut self.next_key,
            &mut self.accepted,
        );
        if handler.queue_response(&bytes, &mut context) {
            Ok(())
        } else {
            Err(TransportError::ConnectionClosed(conn))
        }
    }

    /// The wait before the next handler deadline, bounded by `timeout`.
    /// A wait below one millisecond rounds up to one, so a deadline a few
    /// microseconds away does not turn the loop into a busy spin.
    fn wait_time(&self, timeout: Option<Duration>, now: Instant) -> Option<Duration> {
        let deadline = self
            .handlers
            .values()
            .filter_map(|handler| handler.deadline())
            .min();
        let until_deadline = deadline.map(|deadline| deadline.saturating_duration_since(now));
        let wait = match (timeout, until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wait.map(|wait| {
            if wait > Duration::ZERO && wait < Duration::from_millis(1) {
                Duration::from_millis(1)
            } else {
                wait
            }
        })
    }

    /// Runs `step` on the handler at `key` and removes it when it closes.
    fn dispatch(
        &mut self,
        key: usize,
        events: &mut Vec<Event>,
        step: impl FnOnce(&mut dyn Handler, &mut Context<'_>) -> Status,
    ) {
        let Some(mut handler) = self.handlers.remove(&key) else {
            return;
        };
        let mut context = Context::new(
            &self.poller,
            &self.config,
            events,
            &mut self.next_key,
            &mut self.accepted,
        );
        let status = step(handler.as_mut(), &mut context);
        if status == Status::Closed {
            handler.on_removed(&mut context);
        }
        let added = std::mem::take(&mut context.added);
        if status == Status::Open {
            self.handlers.insert(key, handler);
        }
        for handler in added {
            self.handlers.insert(handler.key(), handler);
        }
    }
}

/// Wakes an [`EpollTransport`] from another thread.
#[derive(Clone, Debug)]
pub struct Waker {
    poller: Arc<Poller>,
}

impl Waker {
    /// Makes the transport's current [`poll`](Transport::poll) return
    /// without events, or the next one if none is waiting. Wakes that come
    /// before one `poll` may count as one.
    ///
    /// # Errors
    ///
    /// Returns the error of the poller's notification (an eventfd write on
    /// Linux).
    pub fn wake(&self) -> io::Result<()> {
        self.poller.notify()
    }
}

impl Transport for EpollTransport {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn send(&mut self, peer: NodeId, message: Message) -> Result<RequestId> {
        let key = *self
            .peer_keys
            .get(&peer)
            .ok_or(TransportError::UnknownPeer(peer))?;
        let id = RequestId(self.next_request);
        let mut bytes = Vec::new();
        frame::encode(
            &Envelope { id, body: message },
            self.config.max_peer_frame,
            &mut bytes,
        )?;
        self.next_request += 1;
        let mut events = Vec::new();
        self.dispatch(key, &mut events, |handler, context| {
            if let Some(initiated) = handler.as_initiated() {
                initiated.queue(id, bytes, context);
            }
            Status::Open
        });
        // A request failed at once (its queue was full) is reported at the
        // next poll, like every other failure.
        self.pending_events.extend(events);
        Ok(id)
    }

    fn respond_peer(&mut self, conn: ConnId, id: RequestId, message: Message) -> Result<()> {
        self.respond(conn, &Envelope { id, body: message })
    }

    fn respond_client(
        &mut self,
        conn: ConnId,
        id: RequestId,
        response: ClientResponse,
    ) -> Result<()> {
        self.respond(conn, &Envelope { id, body: response })
    }

    fn poll(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> Result<()> {
        events.append(&mut self.pending_events);
        let timeout = if events.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let wait = self.wait_time(timeout, Instant::now());
        self.poll_events.clear();
        match self.poller.wait(&mut self.poll_events, wait) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
        let ready: Vec<polling::Event> = self.poll_events.iter().collect();
        for event in ready {
            self.dispatch(event.key, events, |handler, context| {
                handler.on_ready(event, context)
            });
        }

        let now = Instant::now();
        let due: Vec<usize> = self
            .handlers
            .iter()
            .filter(|(_, handler)| handler.deadline().is_some_and(|deadline| deadline <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            self.dispatch(key, events, |handler, context| handler.on_timer(context));
        }
        Ok(())
    }
}

impl Drop for EpollTransport {
    fn drop(&mut self) {
        for handler in self.handlers.values_mut() {
            let mut events = Vec::new();
            let mut context = Context::new(
                &self.poller,
                &self.config,
                &mut events,
                &mut self.next_key,
                &mut self.accepted,
            );
            handler.on_removed(&mut context);
        }
    }
}

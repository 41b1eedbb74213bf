//! One node's [`Transport`] on the simulated network.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use serde::Serialize;
use transport::frame::{self, FrameDecoder};
use transport::handshake::{Hello, HelloReply};
use transport::{
    ClientRequest, ClientResponse, ConnId, Envelope, Event, FrameError, RequestId, Result,
    Transport, TransportConfig, TransportError,
};

use crate::network::{EndpointId, MemNetwork, NetConnId, Port};

/// A request sent to a peer, waiting for its response.
#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    bytes: Vec<u8>,
    attempts: u32,
    /// When to resend, or fail once attempts run out.
    deadline: Duration,
}

/// The initiated connection to one peer.
#[derive(Debug)]
struct Initiated {
    addr: String,
    conn: Option<NetConnId>,
    handshaken: bool,
    decoder: FrameDecoder,
    /// Requests waiting for the handshake, oldest first.
    queued: VecDeque<Outstanding>,
    /// Requests written on the current connection.
    in_flight: BTreeMap<RequestId, Outstanding>,
    backoff: Duration,
    reconnect_at: Duration,
    /// When an unanswered handshake gives up.
    handshake_deadline: Duration,
}

/// An accepted connection.
#[derive(Debug)]
struct Accepted {
    port: Port,
    /// The peer's id once its handshake passed, or `None` for a client.
    peer: Option<NodeId>,
    handshaken: bool,
    decoder: FrameDecoder,
}

/// A node's transport on a [`MemNetwork`]. It listens on its member address
/// from the configuration and on a client address, and behaves like the TCP
/// transport: handshakes, ordered delivery per connection, request timeouts
/// and retries, reconnects with backoff. Time is the network's virtual
/// clock, and [`Transport::poll`] never blocks.
#[derive(Debug)]
pub struct MemTransport {
    network: MemNetwork,
    endpoint: EndpointId,
    /// Speed of this node's clock in thousandths of the network's: 1000 runs
    /// at the same pace, 1010 runs 1% fast.
    clock_rate_permille: u32,
    config: TransportConfig,
    peers: BTreeMap<NodeId, Initiated>,
    accepted: BTreeMap<NetConnId, Accepted>,
    next_request: u64,
}

impl MemTransport {
    /// Registers a node on `network`, listening on its own peer address from
    /// `config.members` and on `client_addr`.
    ///
    /// # Errors
    ///
    /// Returns [`TransportError::UnknownPeer`] when the node is missing from
    /// its own member list, and [`TransportError::Bind`] when an address is
    /// taken.
    pub fn new(
        network: &MemNetwork,
        config: TransportConfig,
        client_addr: &str,
    ) -> Result<MemTransport> {
        let own_addr = config
            .members
            .iter()
            .find(|member| member.id == config.node_id)
            .map(|member| member.addr.clone())
            .ok_or(TransportError::UnknownPeer(config.node_id))?;
        let mut inner = network.inner.borrow_mut();
        for addr in [own_addr.as_str(), client_addr] {
            if inner.listeners.contains_key(addr) {
                return Err(TransportError::Bind {
                    addr: addr.to_string(),
                    source: std::io::ErrorKind::AddrInUse.into(),
                });
            }
        }
        let endpoint = inner.new_endpoint();
        inner.names.insert(endpoint, own_addr.clone());
        inner
            .listeners
            .insert(own_addr.clone(), (endpoint, Port::Peer));
        inner
            .listeners
            .insert(client_addr.to_owned(), (endpoint, Port::Client));
        drop(inner);

        let peers = config
            .members
            .iter()
            .filter(|member| member.id != config.node_id)
            .map(|member| {
                let initiated = Initiated {
                    addr: member.addr.clone(),
                    conn: None,
                    handshaken: false,
                    decoder: FrameDecoder::new(config.max_peer_frame),
                    queued: VecDeque::new(),
                    in_flight: BTreeMap::new(),
                    backoff: config.reconnect_backoff_min,
                    reconnect_at: Duration::ZERO,
                    handshake_deadline: Duration::ZERO,
                };
                (member.id, initiated)
            })
            .collect();
        Ok(MemTransport {
            network: network.clone(),
            endpoint,
            clock_rate_permille: 1000,
            config,
            peers,
            accepted: BTreeMap::new(),
            next_request: 1,
        })
    }

    pub fn network(&self) -> &MemNetwork {
        &self.network
    }

    /// Makes [`Transport::now`] run at `permille` thousandths of the
    /// network's clock, so that nodes tick at different speeds. Timeouts
    /// inside the transport keep the network's clock.
    pub fn set_clock_rate(&mut self, permille: u32) {
        self.clock_rate_permille = permille;
    }

    fn virtual_now(&self) -> Duration {
        self.network.inner.borrow().now
    }

    /// Writes a handshake frame, which the network never drops or delays.
    fn write<T: Serialize>(&self, conn: NetConnId, to_acceptor: bool, value: &T, max: usize) {
        let mut bytes = Vec::new();
        if let Err(error) = frame::encode(value, max, &mut bytes) {
            tracing::warn!(conn, %error, "dropping a frame that cannot be encoded");
            return;
        }
        self.network
            .inner
            .borrow_mut()
            .send(conn, to_acceptor, bytes, true);
    }

    fn close(&mut self, conn: NetConnId) {
        self.network.inner.borrow_mut().close(conn);
    }

    /// Handles connections that closed: accepted ones are forgotten, and
    /// initiated ones schedule a reconnect and put their requests back in
    /// the queue.
    fn reap_closed(&mut self, events: &mut Vec<Event>) {
        let closed = self.network.inner.borrow().closed_conns(self.endpoint);
        let now = self.virtual_now();
        for conn in closed {
            if let Some(accepted) = self.accepted.remove(&conn)
                && accepted.handshaken
            {
                events.push(Event::ConnectionClosed { conn: ConnId(conn) });
            }
            for initiated in self.peers.values_mut() {
                if initiated.conn == Some(conn) {
                    initiated.conn = None;
                    initiated.handshaken = false;
                    initiated.reconnect_at = now + initiated.backoff;
                    initiated.backoff =
                        (initiated.backoff * 2).min(self.config.reconnect_backoff_max);
                    let in_flight = std::mem::take(&mut initiated.in_flight);
                    for (_, outstanding) in in_flight.into_iter().rev() {
                        initiated.queued.push_front(outstanding);
                    }
                }
            }
            self.network.inner.borrow_mut().forget(conn, self.endpoint);
        }
    }

    fn receive(&mut self, events: &mut Vec<Event>) {
        let packets = self.network.inner.borrow_mut().take_due(self.endpoint);
        for packet in packets {
            if packet.to_acceptor {
                self.receive_accepted(packet.conn, &packet.bytes, events);
            } else {
                self.receive_initiated(packet.conn, &packet.bytes, events);
            }
        }
    }

    fn receive_accepted(&mut self, conn: NetConnId, bytes: &[u8], events: &mut Vec<Event>) {
        let port = match self.network.inner.borrow().conns.get(&conn) {
            Some(net_conn) => net_conn.port,
            None => return,
        };
        let max = match port {
            Port::Peer => self.config.max_peer_frame,
            Port::Client => self.config.max_client_frame,
        };
        let accepted = self.accepted.entry(conn).or_insert_with(|| Accepted {
            port,
            peer: None,
            handshaken: false,
            decoder: FrameDecoder::new(max),
        });
        accepted.decoder.extend(bytes);
        loop {
            let Some(accepted) = self.accepted.get_mut(&conn) else {
                return;
            };
            let body = match accepted.decoder.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(conn, %error, "closing connection after invalid frame");
                    self.close(conn);
                    return;
                }
            };
            if let Err(error) = self.handle_accepted_frame(conn, &body, events) {
                tracing::warn!(conn, %error, "closing connection after invalid frame");
                self.close(conn);
                return;
            }
        }
    }

    fn handle_accepted_frame(
        &mut self,
        conn: NetConnId,
        body: &[u8],
        events: &mut Vec<Event>,
    ) -> std::result::Result<(), FrameError> {
        let accepted = self.accepted.get_mut(&conn).expect("caller checked");
        if !accepted.handshaken {
            let hello: Hello = frame::decode(body)?;
            let members = self.config.member_ids();
            let checked = match accepted.port {
                Port::Peer => hello
                    .check_peer(&self.config.cluster_id, self.config.node_id, &members)
                    .map(Some),
                Port::Client => hello.check_client().map(|()| None),
            };
            let reply = match &checked {
                Ok(peer) => {
                    accepted.handshaken = true;
                    accepted.peer = *peer;
                    HelloReply {
                        accepted: true,
                        node_id: Some(self.config.node_id),
                        error: None,
                    }
                }
                Err(error) => {
                    tracing::warn!(conn, %error, "rejecting handshake");
                    HelloReply {
                        accepted: false,
                        node_id: Some(self.config.node_id),
                        error: Some(error.to_string()),
                    }
                }
            };
            let max = self.config.max_client_frame;
            self.write(conn, false, &reply, max);
            if checked.is_err() {
                self.close(conn);
            }
            return Ok(());
        }
        match (accepted.port, accepted.peer) {
            (Port::Peer, Some(from)) => {
                let envelope: Envelope<Message> = frame::decode(body)?;
                events.push(Event::PeerRequest {
                    conn: ConnId(conn),
                    id: envelope.id,
                    from,
                    message: envelope.body,
                });
            }
            _ => {
                let envelope: Envelope<ClientRequest> = frame::decode(body)?;
                events.push(Event::ClientRequest {
                    conn: ConnId(conn),
                    id: envelope.id,
                    request: envelope.body,
                });
            }
        }
        Ok(())
    }

    fn receive_initiated(&mut self, conn: NetConnId, bytes: &[u8], events: &mut Vec<Event>) {
        let Some((&peer, initiated)) = self
            .peers
            .iter_mut()
            .find(|(_, initiated)| initiated.conn == Some(conn))
        else {
            return;
        };
        initiated.decoder.extend(bytes);
        loop {
            let initiated = self.peers.get_mut(&peer).expect("found above");
            let body = match initiated.decoder.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(peer = peer.0, %error, "closing connection after invalid frame");
                    self.close(conn);
                    return;
                }
            };
            if !initiated.handshaken {
                match frame::decode::<HelloReply>(&body) {
                    Ok(reply) if reply.accepted => {
                        initiated.handshaken = true;
                        initiated.backoff = self.config.reconnect_backoff_min;
                        self.flush(peer);
                    }
                    Ok(reply) => {
                        tracing::warn!(peer = peer.0, error = ?reply.error, "peer rejected the handshake");
                        self.close(conn);
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(peer = peer.0, %error, "closing connection after invalid frame");
                        self.close(conn);
                        return;
                    }
                }
                continue;
            }
            match frame::decode::<Envelope<Message>>(&body) {
                Ok(envelope) => {
                    if initiated.in_flight.remove(&envelope.id).is_some() {
                        events.push(Event::PeerResponse {
                            peer,
                            id: envelope.id,
                            message: envelope.body,
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(peer = peer.0, %error, "closing connection after invalid frame");
                    self.close(conn);
                    return;
                }
            }
        }
    }

    /// Writes queued requests to a handshaken connection.
    fn flush(&mut self, peer: NodeId) {
        let now = self.virtual_now();
        let timeout = self.config.request_timeout;
        let initiated = self.peers.get_mut(&peer).expect("known peer");
        let Some(conn) = initiated.conn.filter(|_| initiated.handshaken) else {
            return;
        };
        let mut writes = Vec::new();
        while let Some(mut outstanding) = initiated.queued.pop_front() {
            outstanding.attempts += 1;
            outstanding.deadline = now + timeout;
            writes.push(outstanding.bytes.clone());
            initiated.in_flight.insert(outstanding.id, outstanding);
        }
        let mut inner = self.network.inner.borrow_mut();
        for bytes in writes {
            inner.send(conn, true, bytes, false);
        }
    }

    /// Connects where requests wait, and resends or fails requests whose
    /// deadline passed.
    fn handle_timers(&mut self, events: &mut Vec<Event>) {
        let now = self.virtual_now();
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            let max_attempts = self.config.max_attempts;
            let timeout = self.config.request_timeout;
            let initiated = self.peers.get_mut(&peer).expect("known peer");

            let expired: Vec<RequestId> = initiated
                .in_flight
                .iter()
                .filter(|(_, outstanding)| outstanding.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let mut resend = Vec::new();
            let mut unresponsive = false;
            for id in expired {
                let outstanding = initiated.in_flight.get_mut(&id).expect("listed above");
                if outstanding.attempts >= max_attempts {
                    initiated.in_flight.remove(&id);
                    events.push(Event::RequestFailed { peer, id });
                    unresponsive = true;
                } else {
                    outstanding.attempts += 1;
                    outstanding.deadline = now + timeout;
                    resend.push(outstanding.bytes.clone());
                }
            }
            // Requests that never reached a connection fail once the time
            // for all their attempts has passed.
            while initiated
                .queued
                .front()
                .is_some_and(|outstanding| outstanding.deadline <= now)
            {
                let outstanding = initiated.queued.pop_front().expect("checked above");
                events.push(Event::RequestFailed {
                    peer,
                    id: outstanding.id,
                });
            }
            if let Some(conn) = initiated.conn.filter(|_| initiated.handshaken) {
                let mut inner = self.network.inner.borrow_mut();
                for bytes in resend {
                    inner.send(conn, true, bytes, false);
                }
            }
            // A peer that responds to neither the handshake nor a request
            // within its attempts counts as a broken connection, so close it
            // and reconnect with backoff, as the TCP transport does.
            let handshake_expired = initiated.conn.is_some()
                && !initiated.handshaken
                && initiated.handshake_deadline <= now;
            if let Some(conn) = initiated.conn
                && (unresponsive || handshake_expired)
            {
                tracing::debug!(peer = peer.0, "closing unresponsive peer connection");
                self.network.inner.borrow_mut().close(conn);
                continue;
            }

            let waiting = !initiated.queued.is_empty() || !initiated.in_flight.is_empty();
            if initiated.conn.is_none() && waiting && initiated.reconnect_at <= now {
                self.connect(peer);
            }
        }
    }

    fn connect(&mut self, peer: NodeId) {
        let now = self.virtual_now();
        let hello = Hello::peer(&self.config.cluster_id, self.config.node_id);
        let max = self.config.max_peer_frame;
        let backoff_max = self.config.reconnect_backoff_max;
        let initiated = self.peers.get_mut(&peer).expect("known peer");
        let conn = self
            .network
            .inner
            .borrow_mut()
            .connect(self.endpoint, &initiated.addr);
        match conn {
            Some(conn) => {
                initiated.conn = Some(conn);
                initiated.handshaken = false;
                initiated.handshake_deadline = now + self.config.request_timeout;
                initiated.decoder = FrameDecoder::new(max);
                self.write(conn, true, &hello, max);
            }
            None => {
                initiated.reconnect_at = now + initiated.backoff;
                initiated.backoff = (initiated.backoff * 2).min(backoff_max);
            }
        }
    }
}

impl Transport for MemTransport {
    fn now(&self) -> Instant {
        let inner = self.network.inner.borrow();
        let elapsed = inner.now * self.clock_rate_permille / 1000;
        inner.instant() - inner.now + elapsed
    }

    fn send(&mut self, peer: NodeId, message: Message) -> Result<RequestId> {
        let id = RequestId(self.next_request);
        let max = self.config.max_peer_frame;
        let max_queued = self.config.max_queued_requests;
        let give_up_after = self.config.request_timeout * self.config.max_attempts;
        let now = self.virtual_now();
        let initiated = self
            .peers
            .get_mut(&peer)
            .ok_or(TransportError::UnknownPeer(peer))?;
        let mut bytes = Vec::new();
        frame::encode(&Envelope { id, body: message }, max, &mut bytes)?;
        self.next_request += 1;
        if initiated.queued.len() + initiated.in_flight.len() >= max_queued {
            // The caller learns of the loss at the next poll, as with a
            // timeout.
            initiated.queued.push_back(Outstanding {
                id,
                bytes: Vec::new(),
                attempts: 0,
                deadline: now,
            });
            return Ok(id);
        }
        initiated.queued.push_back(Outstanding {
            id,
            bytes,
            attempts: 0,
            deadline: now + give_up_after,
        });
        self.flush(peer);
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

    fn poll(&mut self, events: &mut Vec<Event>, _timeout: Option<Duration>) -> Result<()> {
        self.reap_closed(events);
        self.receive(events);
        self.handle_timers(events);
        Ok(())
    }
}

impl MemTransport {
    fn respond<T: Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let Some(accepted) = self.accepted.get(&conn.0) else {
            return Err(TransportError::ConnectionClosed(conn));
        };
        let max = match accepted.port {
            Port::Peer => self.config.max_peer_frame,
            Port::Client => self.config.max_client_frame,
        };
        let mut bytes = Vec::new();
        frame::encode(value, max, &mut bytes)?;
        self.network
            .inner
            .borrow_mut()
            .send(conn.0, false, bytes, false);
        Ok(())
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.network
            .inner
            .borrow_mut()
            .remove_endpoint(self.endpoint);
    }
}

//! One node's [`Transport`] on the simulated network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_core::{Message, NodeId};
use serde::Serialize;
use transport::frame;
use transport::{
    ClientResponse, ConnId, Envelope, Event, RequestId, Result, Transport, TransportConfig,
    TransportError,
};

use crate::accepted::{Accepted, CloseReason};
use crate::initiated::Initiated;
use crate::network::{EndpointId, Inner, MemNetwork, NetConnId};

/// The network and node state that connection handlers act on, lent to one
/// handler at a time.
pub(crate) struct Context<'a> {
    pub(crate) net: &'a mut Inner,
    pub(crate) config: &'a TransportConfig,
    pub(crate) endpoint: EndpointId,
    /// Events for the caller of `poll`.
    pub(crate) events: &'a mut Vec<Event>,
}

impl Context<'_> {
    /// Returns the network's virtual time, which every deadline inside the
    /// transport uses.
    pub(crate) fn now(&self) -> Instant {
        self.net.instant()
    }
}

/// A node's transport on a [`MemNetwork`]. It listens on its member address
/// from the configuration and on a client address, and behaves like the TCP
/// transport: handshakes, ordered delivery per connection, request timeouts
/// and retries, reconnects with backoff. Time is the network's virtual
/// clock, and [`Transport::poll`] never blocks.
///
/// Dropping the transport crashes the node: its listeners go away and its
/// connections are reset, so its peers see [`Event::ConnectionClosed`] and
/// reconnect.
#[derive(Debug)]
pub struct MemTransport {
    network: MemNetwork,
    endpoint: EndpointId,
    peer_addr: String,
    client_addr: String,
    /// Speed of this node's clock in thousandths of the network's: 1000 runs
    /// at the same pace, 1010 runs 1% fast.
    clock_rate_permille: u32,
    config: TransportConfig,
    peers: BTreeMap<NodeId, Initiated>,
    accepted: BTreeMap<NetConnId, Accepted>,
    next_request: u64,
    /// Events produced outside `poll`, returned by the next `poll`.
    pending_events: Vec<Event>,
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
        let peer_addr = config
            .members
            .iter()
            .find(|member| member.id == config.node_id)
            .map(|member| member.addr.clone())
            .ok_or(TransportError::UnknownPeer(config.node_id))?;
        let mut inner = network.inner.borrow_mut();
        for addr in [peer_addr.as_str(), client_addr] {
            if inner.listeners.contains_key(addr) {
                return Err(TransportError::Bind {
                    addr: addr.to_owned(),
                    source: std::io::ErrorKind::AddrInUse.into(),
                });
            }
        }
        let endpoint = inner.new_endpoint(peer_addr.clone());
        inner
            .listeners
            .insert(peer_addr.clone(), (endpoint, crate::network::Port::Peer));
        inner.listeners.insert(
            client_addr.to_owned(),
            (endpoint, crate::network::Port::Client),
        );
        let now = inner.instant();
        drop(inner);

        let peers = config
            .members
            .iter()
            .filter(|member| member.id != config.node_id)
            .map(|member| {
                let initiated = Initiated::new(member.id, member.addr.clone(), &config, now);
                (member.id, initiated)
            })
            .collect();
        Ok(MemTransport {
            network: network.clone(),
            endpoint,
            peer_addr,
            client_addr: client_addr.to_owned(),
            clock_rate_permille: 1000,
            config,
            peers,
            accepted: BTreeMap::new(),
            next_request: 1,
            pending_events: Vec::new(),
        })
    }

    pub fn network(&self) -> &MemNetwork {
        &self.network
    }

    /// Returns the address peers connect to, from the configuration.
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    /// Returns the address clients connect to.
    pub fn client_addr(&self) -> &str {
        &self.client_addr
    }

    /// Makes [`Transport::now`] run at `permille` thousandths of the
    /// network's clock, so that nodes tick at different speeds. Timeouts
    /// inside the transport keep the network's clock.
    pub fn set_clock_rate(&mut self, permille: u32) {
        self.clock_rate_permille = permille;
    }

    /// Returns the earliest time, on the network's clock
    /// ([`MemNetwork::now`]), at which a poll has timer work: a resend, a
    /// failure, a reconnect or a handshake timeout. Together with
    /// [`MemNetwork::next_delivery`] it bounds how far a test can advance
    /// the clock without skipping work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let initiated = self.peers.values().filter_map(Initiated::next_deadline);
        let accepted = self.accepted.values().filter_map(Accepted::next_deadline);
        initiated.chain(accepted).min()
    }

    fn respond<T: Serialize>(&mut self, conn: ConnId, value: &T) -> Result<()> {
        let limit = self
            .accepted
            .get(&conn.0)
            .and_then(Accepted::response_frame_limit);
        let mut inner = self.network.inner.borrow_mut();
        let Some(max_frame) = limit.filter(|_| inner.is_open(conn.0)) else {
            return Err(TransportError::ConnectionClosed(conn));
        };
        let mut bytes = Vec::new();
        frame::encode(value, max_frame, &mut bytes)?;
        inner.send(conn.0, false, bytes, false);
        Ok(())
    }
}

/// Logs why an accepted connection closes, resets it and removes its entry.
fn close_accepted(
    accepted: &mut BTreeMap<NetConnId, Accepted>,
    conn: NetConnId,
    reason: &CloseReason,
    context: &mut Context<'_>,
) {
    tracing::warn!(
        conn,
        remote = %context.net.remote_name(conn, context.endpoint),
        error = %reason,
        "closing connection after an error"
    );
    context.net.reset(conn);
    if accepted
        .remove(&conn)
        .is_some_and(|accepted| accepted.handshaken())
    {
        context
            .events
            .push(Event::ConnectionClosed { conn: ConnId(conn) });
    }
}

impl Transport for MemTransport {
    fn now(&self) -> Instant {
        let inner = self.network.inner.borrow();
        let elapsed = inner.now * self.clock_rate_permille / 1000;
        inner.instant() - inner.now + elapsed
    }

    fn send(&mut self, peer: NodeId, message: Message) -> Result<RequestId> {
        let initiated = self
            .peers
            .get_mut(&peer)
            .ok_or(TransportError::UnknownPeer(peer))?;
        let id = RequestId(self.next_request);
        let mut bytes = Vec::new();
        frame::encode(
            &Envelope { id, body: message },
            self.config.max_peer_frame,
            &mut bytes,
        )?;
        self.next_request += 1;

        let mut inner = self.network.inner.borrow_mut();
        // A request failed at once (its queue was full) is reported at the
        // next poll, like every other failure.
        let mut context = Context {
            net: &mut inner,
            config: &self.config,
            endpoint: self.endpoint,
            events: &mut self.pending_events,
        };
        initiated.queue(id, bytes, &mut context);
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

    /// Accepts new connections, delivers the packets due by the current
    /// virtual time, handles closed connections, then deadlines. Returns at
    /// once and ignores `timeout`.
    fn poll(&mut self, events: &mut Vec<Event>, _timeout: Option<Duration>) -> Result<()> {
        events.append(&mut self.pending_events);
        let mut inner = self.network.inner.borrow_mut();
        let mut context = Context {
            net: &mut inner,
            config: &self.config,
            endpoint: self.endpoint,
            events,
        };

        for (conn, port) in context.net.accept(self.endpoint) {
            if self.accepted.len() >= self.config.max_connections {
                tracing::warn!(
                    conn,
                    max = self.config.max_connections,
                    "rejecting connection above the connection limit"
                );
                context.net.reset(conn);
                continue;
            }
            let accepted = Accepted::new(conn, port, &context);
            self.accepted.insert(conn, accepted);
        }

        // Packets come before closes, so that a connection closed after its
        // last frames still delivers them.
        for packet in context.net.take_due(self.endpoint) {
            if packet.to_acceptor {
                let Some(accepted) = self.accepted.get_mut(&packet.conn) else {
                    continue;
                };
                if let Err(reason) = accepted.receive(&packet.bytes, &mut context) {
                    close_accepted(&mut self.accepted, packet.conn, &reason, &mut context);
                }
            } else if let Some(initiated) = self
                .peers
                .values_mut()
                .find(|initiated| initiated.conn() == Some(packet.conn))
            {
                initiated.receive(&packet.bytes, &mut context);
            }
        }

        for conn in context.net.closed_conns(self.endpoint) {
            if let Some(accepted) = self.accepted.remove(&conn)
                && accepted.handshaken()
            {
                context
                    .events
                    .push(Event::ConnectionClosed { conn: ConnId(conn) });
            }
            if let Some(initiated) = self
                .peers
                .values_mut()
                .find(|initiated| initiated.conn() == Some(conn))
            {
                initiated.closed(&mut context);
            }
            context.net.forget(conn, self.endpoint);
        }

        let now = context.now();
        let late: Vec<(NetConnId, CloseReason)> = self
            .accepted
            .iter()
            .filter_map(|(conn, accepted)| {
                let reason = accepted.check_handshake_deadline(now)?;
                Some((*conn, reason))
            })
            .collect();
        for (conn, reason) in late {
            close_accepted(&mut self.accepted, conn, &reason, &mut context);
        }
        for initiated in self.peers.values_mut() {
            initiated.on_timer(&mut context);
        }
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

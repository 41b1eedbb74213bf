//! The simulated network: listeners, connections, packets in flight and the
//! virtual clock, shared by every endpoint of one simulation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Identifies an endpoint (a transport or a client) on the network.
pub(crate) type EndpointId = u64;
/// Identifies a connection on the network.
pub(crate) type NetConnId = u64;

/// The port a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    Peer,
    Client,
}

#[derive(Debug)]
pub(crate) struct NetConn {
    pub(crate) initiator: EndpointId,
    pub(crate) acceptor: EndpointId,
    pub(crate) port: Port,
    pub(crate) open: bool,
}

/// Bytes written on one side of a connection, due at the other side at `at`.
#[derive(Debug)]
pub(crate) struct Packet {
    pub(crate) conn: NetConnId,
    /// True when the acceptor is the receiver.
    pub(crate) to_acceptor: bool,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    base: Instant,
    pub(crate) now: Duration,
    pub(crate) latency: Duration,
    next_endpoint: EndpointId,
    next_conn: NetConnId,
    next_seq: u64,
    pub(crate) listeners: BTreeMap<String, (EndpointId, Port)>,
    pub(crate) conns: BTreeMap<NetConnId, NetConn>,
    /// Packets in flight, by delivery time and then send order, so that
    /// delivery on one connection keeps the order of its writes.
    pub(crate) packets: BTreeMap<(Duration, u64), Packet>,
    /// Directed endpoint pairs whose packets are dropped.
    cut: BTreeSet<(EndpointId, EndpointId)>,
}

/// An in-memory network with a virtual clock. Cloning it yields another
/// handle to the same network.
///
/// Nothing happens on its own: packets are delivered when their receiver
/// polls at or after their delivery time, and time moves only through
/// [`MemNetwork::advance`].
#[derive(Clone, Debug)]
pub struct MemNetwork {
    pub(crate) inner: Rc<RefCell<Inner>>,
}

impl Default for MemNetwork {
    fn default() -> Self {
        MemNetwork::new()
    }
}

impl MemNetwork {
    /// Creates a network whose packets take 1 ms to arrive.
    pub fn new() -> MemNetwork {
        MemNetwork {
            inner: Rc::new(RefCell::new(Inner {
                base: Instant::now(),
                now: Duration::ZERO,
                latency: Duration::from_millis(1),
                next_endpoint: 1,
                next_conn: 1,
                next_seq: 0,
                listeners: BTreeMap::new(),
                conns: BTreeMap::new(),
                packets: BTreeMap::new(),
                cut: BTreeSet::new(),
            })),
        }
    }

    /// Sets the one-way delay of every packet sent from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.borrow_mut().latency = latency;
    }

    /// Returns the current virtual time.
    pub fn now(&self) -> Instant {
        self.inner.borrow().instant()
    }

    /// Virtual time since the network was created.
    pub fn elapsed(&self) -> Duration {
        self.inner.borrow().now
    }

    /// Moves the virtual clock forward.
    pub fn advance(&self, duration: Duration) {
        self.inner.borrow_mut().now += duration;
    }

    /// Returns the delivery time of the earliest packet in flight, if any.
    pub fn next_delivery(&self) -> Option<Instant> {
        let inner = self.inner.borrow();
        inner.packets.keys().next().map(|(at, _)| inner.base + *at)
    }

    /// Drops every packet between the endpoints listening on `a` and `b`, in
    /// both directions, until [`MemNetwork::heal`]. Either address may be a
    /// peer or a client address.
    pub fn disconnect(&self, a: &str, b: &str) {
        let mut inner = self.inner.borrow_mut();
        let (Some(a), Some(b)) = (inner.endpoint_of(a), inner.endpoint_of(b)) else {
            return;
        };
        inner.cut.insert((a, b));
        inner.cut.insert((b, a));
    }

    /// Removes every cut made by [`MemNetwork::disconnect`].
    pub fn heal(&self) {
        self.inner.borrow_mut().cut.clear();
    }
}

impl Inner {
    pub(crate) fn instant(&self) -> Instant {
        self.base + self.now
    }

    pub(crate) fn new_endpoint(&mut self) -> EndpointId {
        let id = self.next_endpoint;
        self.next_endpoint += 1;
        id
    }

    fn endpoint_of(&self, addr: &str) -> Option<EndpointId> {
        self.listeners.get(addr).map(|(endpoint, _)| *endpoint)
    }

    /// Opens a connection from `initiator` to the listener at `addr`.
    /// Returns `None`, like a refused TCP connect, when nothing listens
    /// there.
    pub(crate) fn connect(&mut self, initiator: EndpointId, addr: &str) -> Option<NetConnId> {
        let (acceptor, port) = *self.listeners.get(addr)?;
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            NetConn {
                initiator,
                acceptor,
                port,
                open: true,
            },
        );
        Some(id)
    }

    /// Queues bytes on an open connection. Bytes on a cut link are lost.
    pub(crate) fn send(&mut self, conn: NetConnId, to_acceptor: bool, bytes: Vec<u8>) {
        let Some(net_conn) = self.conns.get(&conn) else {
            return;
        };
        let (from, to) = if to_acceptor {
            (net_conn.initiator, net_conn.acceptor)
        } else {
            (net_conn.acceptor, net_conn.initiator)
        };
        if !net_conn.open || self.cut.contains(&(from, to)) {
            return;
        }
        let at = self.now + self.latency;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.packets.insert(
            (at, seq),
            Packet {
                conn,
                to_acceptor,
                bytes,
            },
        );
    }

    pub(crate) fn close(&mut self, conn: NetConnId) {
        if let Some(net_conn) = self.conns.get_mut(&conn) {
            net_conn.open = false;
        }
    }

    /// Removes and returns the packets due for `endpoint` by now, in order.
    pub(crate) fn take_due(&mut self, endpoint: EndpointId) -> Vec<Packet> {
        let now = self.now;
        let due: Vec<(Duration, u64)> = self
            .packets
            .iter()
            .take_while(|((at, _), _)| *at <= now)
            .filter(|(_, packet)| {
                self.conns.get(&packet.conn).is_some_and(|conn| {
                    let receiver = if packet.to_acceptor {
                        conn.acceptor
                    } else {
                        conn.initiator
                    };
                    receiver == endpoint
                })
            })
            .map(|(key, _)| *key)
            .collect();
        due.into_iter()
            .filter_map(|key| self.packets.remove(&key))
            .filter(|packet| self.conns.get(&packet.conn).is_some_and(|conn| conn.open))
            .collect()
    }

    /// Connections of `endpoint` that were closed, by either side.
    pub(crate) fn closed_conns(&self, endpoint: EndpointId) -> Vec<NetConnId> {
        self.conns
            .iter()
            .filter(|(_, conn)| {
                !conn.open && (conn.initiator == endpoint || conn.acceptor == endpoint)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets a closed connection once both ends have seen it close.
    pub(crate) fn forget(&mut self, conn: NetConnId, endpoint: EndpointId) {
        if let Some(net_conn) = self.conns.get_mut(&conn) {
            if net_conn.initiator == endpoint {
                net_conn.initiator = 0;
            }
            if net_conn.acceptor == endpoint {
                net_conn.acceptor = 0;
            }
            if net_conn.initiator == 0 && net_conn.acceptor == 0 {
                self.conns.remove(&conn);
            }
        }
    }

    /// Unregisters an endpoint: its listeners go away and its connections
    /// close.
    pub(crate) fn remove_endpoint(&mut self, endpoint: EndpointId) {
        self.listeners.retain(|_, (owner, _)| *owner != endpoint);
        let conns: Vec<NetConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.initiator == endpoint || conn.acceptor == endpoint)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.close(conn);
            self.forget(conn, endpoint);
        }
    }
}

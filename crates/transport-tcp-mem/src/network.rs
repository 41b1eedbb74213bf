//! The simulated network: listeners, connections, packets in flight and the
//! virtual clock, shared by every endpoint of one simulation.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Identifies an endpoint (a transport or a client) on the network. Ids
/// start at 1, and 0 marks the end of a connection that is gone.
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
    /// The virtual time at which both ends see the connection closed, once
    /// one end closed it.
    closed_at: Option<Duration>,
    /// The latest delivery time of a packet sent towards the initiator
    /// (index 0) and towards the acceptor (index 1). A later packet never
    /// arrives before an earlier one, unless a fault delays it, so the
    /// stream keeps its order when the latency changes.
    last_due: [Duration; 2],
}

/// Faults the network applies to every frame after a connection's
/// handshake, drawn from its seeded random source. Rates are in parts per
/// million.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Chance that a frame is lost.
    pub drop_ppm: u32,
    /// Chance that a frame arrives twice.
    pub duplicate_ppm: u32,
    /// Each frame is delayed by a random extra time up to this, so frames
    /// overtake each other, on one connection too.
    pub max_extra_delay: Duration,
}

/// A small deterministic random source (SplitMix64).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance_ppm(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.next_u64() % 1_000_000 < u64::from(ppm)
    }
}

/// Bytes written on one side of a connection, due at the other side.
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
    /// Connections not yet taken by their acceptor, per acceptor.
    backlog: BTreeMap<EndpointId, Vec<NetConnId>>,
    /// Packets in flight, by delivery time and then send order.
    pub(crate) packets: BTreeMap<(Duration, u64), Packet>,
    /// Directed pairs of endpoint names whose packets are dropped.
    cut: BTreeSet<(String, String)>,
    /// The name of each endpoint: a node's peer address, or a client's
    /// generated name.
    pub(crate) names: BTreeMap<EndpointId, String>,
    pub(crate) faults: Faults,
    rng: Rng,
    /// Frames dropped and duplicated so far, for reports.
    pub(crate) dropped: u64,
    pub(crate) duplicated: u64,
}

/// An in-memory network with a virtual clock. Cloning it yields another
/// handle to the same network.
///
/// Nothing happens on its own: packets are delivered when their receiver
/// polls at or after their delivery time, and time moves only through
/// [`MemNetwork::advance`].
///
/// A node crashes when its [`MemTransport`](crate::MemTransport) is dropped:
/// its listeners go away and its connections are reset. Creating a new
/// transport with the same configuration restarts it.
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
    /// Creates a network whose packets take 1 ms to arrive, with no faults.
    pub fn new() -> MemNetwork {
        MemNetwork::with_seed(0)
    }

    /// Creates a network whose faults draw from a random source seeded with
    /// `seed`. It applies none until [`MemNetwork::set_faults`].
    pub fn with_seed(seed: u64) -> MemNetwork {
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
                backlog: BTreeMap::new(),
                packets: BTreeMap::new(),
                cut: BTreeSet::new(),
                names: BTreeMap::new(),
                faults: Faults::default(),
                rng: Rng(seed),
                dropped: 0,
                duplicated: 0,
            })),
        }
    }

    /// Sets the one-way delay of every packet sent from now on. Packets on
    /// one connection still arrive in the order they were sent.
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

    /// Sets the faults applied to frames sent from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.inner.borrow_mut().faults = faults;
    }

    /// Drops every packet between the nodes whose peer addresses are `a` and
    /// `b`, in both directions, until [`MemNetwork::heal`]. The cut outlives
    /// restarts of either node.
    pub fn disconnect(&self, a: &str, b: &str) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Drops every packet from node `from` to node `to` (by peer address),
    /// while packets the other way still arrive.
    pub fn cut_one_way(&self, from: &str, to: &str) {
        self.inner
            .borrow_mut()
            .cut
            .insert((from.to_owned(), to.to_owned()));
    }

    /// Splits the nodes into groups (by peer address) that cannot reach
    /// each other, until [`MemNetwork::heal`]. Nodes within a group, and
    /// nodes in no group, are not cut from each other.
    pub fn partition(&self, groups: &[&[&str]]) {
        for (index, group) in groups.iter().enumerate() {
            for other in &groups[index + 1..] {
                for a in group.iter() {
                    for b in other.iter() {
                        self.disconnect(a, b);
                    }
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.inner.borrow_mut().cut.clear();
    }

    /// Closes every open connection of the node with peer address `addr`,
    /// as a TCP reset would: frames in flight are lost, and both ends see
    /// the close at their next poll.
    pub fn reset_connections(&self, addr: &str) {
        let mut inner = self.inner.borrow_mut();
        let Some(endpoint) = inner.endpoint_of(addr) else {
            return;
        };
        let conns: Vec<NetConnId> = inner
            .conns
            .iter()
            .filter(|(_, conn)| conn.initiator == endpoint || conn.acceptor == endpoint)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            inner.reset(conn);
        }
    }

    /// Frames dropped and duplicated by faults so far.
    pub fn fault_counts(&self) -> (u64, u64) {
        let inner = self.inner.borrow();
        (inner.dropped, inner.duplicated)
    }
}

impl Inner {
    pub(crate) fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Registers a new endpoint under `name`, which cuts refer to.
    pub(crate) fn new_endpoint(&mut self, name: String) -> EndpointId {
        let id = self.next_endpoint;
        self.next_endpoint += 1;
        self.names.insert(id, name);
        id
    }

    fn endpoint_of(&self, addr: &str) -> Option<EndpointId> {
        self.listeners.get(addr).map(|(endpoint, _)| *endpoint)
    }

    /// Returns the name of the other end of `conn` as seen by `endpoint`.
    pub(crate) fn remote_name(&self, conn: NetConnId, endpoint: EndpointId) -> String {
        let remote = self.conns.get(&conn).map(|net_conn| {
            if net_conn.acceptor == endpoint {
                net_conn.initiator
            } else {
                net_conn.acceptor
            }
        });
        remote
            .and_then(|remote| self.names.get(&remote).cloned())
            .unwrap_or_else(|| "gone".to_owned())
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
                closed_at: None,
                last_due: [self.now; 2],
            },
        );
        self.backlog.entry(acceptor).or_default().push(id);
        Some(id)
    }

    /// Takes the connections made to `endpoint`'s listeners since the last
    /// call, in the order they were made.
    pub(crate) fn accept(&mut self, endpoint: EndpointId) -> Vec<(NetConnId, Port)> {
        let backlog = self.backlog.remove(&endpoint).unwrap_or_default();
        backlog
            .into_iter()
            .filter_map(|id| self.conns.get(&id).map(|conn| (id, conn.port)))
            .collect()
    }

    pub(crate) fn is_open(&self, conn: NetConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|net_conn| net_conn.closed_at.is_none())
    }

    /// Queues one frame on an open connection. Frames on a cut link are
    /// lost. Unless `reliable`, the frame is subject to the network's
    /// faults. Handshakes are sent reliably, since a real stream never
    /// loses its first bytes while later ones arrive.
    pub(crate) fn send(
        &mut self,
        conn: NetConnId,
        to_acceptor: bool,
        bytes: Vec<u8>,
        reliable: bool,
    ) {
        let Some(net_conn) = self.conns.get(&conn) else {
            return;
        };
        let (from, to) = if to_acceptor {
            (net_conn.initiator, net_conn.acceptor)
        } else {
            (net_conn.acceptor, net_conn.initiator)
        };
        if net_conn.closed_at.is_some() || self.is_cut(from, to) {
            return;
        }
        let mut copies = 1;
        let mut extra = Duration::ZERO;
        if !reliable {
            let faults = self.faults.clone();
            if self.rng.chance_ppm(faults.drop_ppm) {
                self.dropped += 1;
                return;
            }
            if self.rng.chance_ppm(faults.duplicate_ppm) {
                self.duplicated += 1;
                copies = 2;
            }
            let max_extra = faults.max_extra_delay.as_micros() as u64;
            if max_extra > 0 {
                extra = Duration::from_micros(self.rng.next_u64() % (max_extra + 1));
            }
        }
        let direction = usize::from(to_acceptor);
        let net_conn = self.conns.get_mut(&conn).expect("checked above");
        let in_order = (self.now + self.latency).max(net_conn.last_due[direction]);
        for copy in 0..copies {
            let at = in_order + extra * (copy + 1);
            net_conn.last_due[direction] = net_conn.last_due[direction].max(at);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.packets.insert(
                (at, seq),
                Packet {
                    conn,
                    to_acceptor,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn is_cut(&self, from: EndpointId, to: EndpointId) -> bool {
        if self.cut.is_empty() {
            return false;
        }
        match (self.names.get(&from), self.names.get(&to)) {
            (Some(from), Some(to)) => self.cut.contains(&(from.clone(), to.clone())),
            _ => false,
        }
    }

    /// Closes `conn` at once, as a TCP reset would. Frames in flight on it
    /// are lost.
    pub(crate) fn reset(&mut self, conn: NetConnId) {
        let now = self.now;
        let Some(net_conn) = self.conns.get_mut(&conn) else {
            return;
        };
        net_conn.closed_at = Some(net_conn.closed_at.map_or(now, |at| at.min(now)));
        self.packets.retain(|_, packet| packet.conn != conn);
    }

    /// Closes `conn` after the frames already sent on it arrive, as a TCP
    /// close (FIN) would. Nothing more can be sent on it.
    pub(crate) fn close_after_flush(&mut self, conn: NetConnId) {
        let now = self.now;
        let Some(net_conn) = self.conns.get_mut(&conn) else {
            return;
        };
        if net_conn.closed_at.is_none() {
            let last_due = net_conn.last_due[0].max(net_conn.last_due[1]);
            net_conn.closed_at = Some(last_due.max(now));
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
            .collect()
    }

    /// Connections of `endpoint` that are closed by now, by either side.
    pub(crate) fn closed_conns(&self, endpoint: EndpointId) -> Vec<NetConnId> {
        let now = self.now;
        self.conns
            .iter()
            .filter(|(_, conn)| {
                conn.closed_at.is_some_and(|at| at <= now)
                    && (conn.initiator == endpoint || conn.acceptor == endpoint)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets `endpoint`'s end of a closed connection. The connection and
    /// its remaining packets go once both ends are forgotten.
    pub(crate) fn forget(&mut self, conn: NetConnId, endpoint: EndpointId) {
        let Some(net_conn) = self.conns.get_mut(&conn) else {
            return;
        };
        if net_conn.initiator == endpoint {
            net_conn.initiator = 0;
        }
        if net_conn.acceptor == endpoint {
            net_conn.acceptor = 0;
        }
        if net_conn.initiator == 0 && net_conn.acceptor == 0 {
            self.conns.remove(&conn);
            self.packets.retain(|_, packet| packet.conn != conn);
        }
    }

    /// Unregisters an endpoint: its listeners go away and its connections
    /// are reset.
    pub(crate) fn remove_endpoint(&mut self, endpoint: EndpointId) {
        self.listeners.retain(|_, (owner, _)| *owner != endpoint);
        self.names.remove(&endpoint);
        self.backlog.remove(&endpoint);
        let conns: Vec<NetConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.initiator == endpoint || conn.acceptor == endpoint)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.reset(conn);
            self.forget(conn, endpoint);
        }
    }
}

//! The node driver: joins a Raft core to its write-ahead log, its key-value
//! state machine and a transport, on one event loop thread.
//!
//! Each turn of the loop polls the transport (waiting at most until the next
//! tick), handles the events, ticks the core when a tick is due, releases the
//! work of the batches that storage completed, and then carries out every
//! `Ready`: submit its entries and hard state to storage, send what does not
//! depend on them, and hold the rest until storage reports the batch durable.
//! With a [`ThreadedStorage`](crate::storage::ThreadedStorage), the loop never
//! waits for the disk (see [`crate::storage`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use raft_core::{
    Config, Entry, EntryKind, LogIndex, Message, NodeId, RawNode, ReadMode, Role, Term,
};
use transport::{
    ClientErrorKind, ClientRequest, ClientResponse, ConnId, Event, NodeStatus, RequestId, Transport,
};

use crate::cluster::Member;
use crate::kv::{Applied, Command, KvStore, MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::reads::Reads;
use crate::storage::{
    HeldWork, InFlight, InlineStorage, LogStorage, Outgoing, PersistBatch, StorageError,
};
use crate::wal::{Disk, Wal, WalError, WalOptions};

/// Settings of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Every member, this node included.
    pub members: Vec<Member>,
    /// Time between Raft ticks; the leader sends a heartbeat every tick.
    pub tick_interval: Duration,
    /// Minimum election timeout, in ticks.
    pub election_ticks: u32,
    pub wal: WalOptions,
    /// Seed of the core's random source for election timeouts. Give each
    /// node and each run its own, except in reproducible tests.
    pub seed: u64,
    /// Whether to record every applied entry for [`Node::take_applied_log`].
    pub record_applied: bool,
    /// Maximum entries in one AppendEntries message.
    pub max_entries_per_append: usize,
    /// The way reads confirm leadership: a heartbeat round or a lease.
    pub read_mode: ReadMode,
}

/// Errors that stop a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("write-ahead log in {dir}: {source}")]
    Wal {
        dir: PathBuf,
        #[source]
        source: WalError,
    },
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] raft_core::ConfigError),
    #[error("transport failed: {0}")]
    Transport(#[from] transport::TransportError),
    #[error("log storage failed: {0}")]
    Storage(#[from] StorageError),
}

/// A client write or read waiting for its entry to apply.
#[derive(Debug)]
struct PendingRequest {
    term: Term,
    conn: ConnId,
    id: RequestId,
}

/// One raftd node, generic over its transport and its log storage.
pub struct Node<T: Transport, S: LogStorage> {
    config: NodeConfig,
    raw: RawNode,
    storage: S,
    /// Batches handed to `storage` and not yet durable, with the messages
    /// and committed entries that wait for them.
    in_flight: InFlight,
    kv: KvStore,
    transport: T,
    next_tick: Instant,
    /// Peer requests stepped into the core whose response the core has not
    /// produced yet, per peer in arrival order. The core responds to each
    /// request exactly once and in order, so its next response to a peer
    /// pairs with the front entry. A response may leave later, already
    /// paired.
    peer_requests: BTreeMap<NodeId, VecDeque<(ConnId, RequestId)>>,
    /// Client requests proposed by this node, by log index.
    pending: BTreeMap<LogIndex, PendingRequest>,
    events: Vec<Event>,
    /// Client reads waiting for their read index or their apply.
    reads: Reads,
    /// The role, term and leader last logged.
    last_observed: Option<(Role, Term, Option<NodeId>)>,
    /// Ticks handed to the core since the node started.
    ticks: u64,
    /// Applied entries as (index, term), recorded when
    /// [`NodeConfig::record_applied`] is set, for the simulator's checks.
    applied_log: Vec<(LogIndex, Term)>,
}

impl<T: Transport, D: Disk> Node<T, InlineStorage<D>> {
    /// Opens the node's log in its data directory as
    /// [`Node::with_storage`] does, and writes it on the event loop thread
    /// through an [`InlineStorage`]: the storage for tests and the
    /// simulator.
    ///
    /// # Errors
    ///
    /// As [`Node::with_storage`].
    pub fn new(config: NodeConfig, disk: D, transport: T) -> Result<Self, NodeError> {
        Node::with_storage(config, disk, transport, |wal, dir| {
            Ok(InlineStorage::new(wal, dir))
        })
    }
}

impl<T: Transport, S: LogStorage> Node<T, S> {
    /// Opens the node's log in its data directory, recovers term, vote and
    /// log, and replays committed entries into the state machine. Then
    /// `build_storage` receives the opened log and its directory and returns
    /// the storage that writes it from now on, such as a
    /// [`ThreadedStorage`](crate::storage::ThreadedStorage).
    ///
    /// # Errors
    ///
    /// Returns an error when the log cannot be opened or is corrupt, when
    /// the configuration is invalid, or when `build_storage` fails.
    pub fn with_storage<D: Disk>(
        config: NodeConfig,
        disk: D,
        transport: T,
        build_storage: impl FnOnce(Wal<D>, PathBuf) -> Result<S, StorageError>,
    ) -> Result<Self, NodeError> {
        let wal_dir = config.data_dir.join("wal");
        let (wal, recovered) =
            Wal::open(disk, &wal_dir, config.wal.clone()).map_err(|source| NodeError::Wal {
                dir: wal_dir.clone(),
                source,
            })?;
        let hard_state = recovered.hard_state;
        let entries = recovered.entries;

        // The state machine lives in memory, so it is rebuilt from the
        // committed prefix of the log at every start.
        let mut kv = KvStore::new();
        let committed = hard_state.commit.min(LogIndex(entries.len() as u64));
        for entry in &entries[..committed.0 as usize] {
            apply_to(&mut kv, entry);
        }

        let mut raft_config = Config::new(config.id, config.members.iter().map(|m| m.id).collect());
        raft_config.election_tick = config.election_ticks;
        raft_config.heartbeat_tick = 1;
        raft_config.max_entries_per_append = config.max_entries_per_append;
        raft_config.read_mode = config.read_mode;
        raft_config.seed = config.seed;
        tracing::info!(
            node = config.id.0,
            term = hard_state.term.0,
            vote = ?hard_state.vote.map(|vote| vote.0),
            commit = committed.0,
            last_index = entries.len(),
            "recovered state from the write-ahead log"
        );
        // The injected bug hands the committed entries out once more, as if
        // the state machine had lost track of what it applied.
        let applied = if raft_core::injected!(DoubleApply) && committed.0 > 0 {
            LogIndex(committed.0 - 1)
        } else {
            committed
        };
        let raw = RawNode::new(raft_config, hard_state, entries, applied)?;
        let storage = build_storage(wal, wal_dir)?;
        let next_tick = transport.now() + config.tick_interval;
        Ok(Node {
            config,
            raw,
            storage,
            in_flight: InFlight::default(),
            kv,
            transport,
            next_tick,
            peer_requests: BTreeMap::new(),
            pending: BTreeMap::new(),
            events: Vec::new(),
            reads: Reads::default(),
            last_observed: None,
            ticks: 0,
            applied_log: Vec::new(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    pub fn is_leader(&self) -> bool {
        self.raw.status().role == Role::Leader
    }

    /// The Raft core, for inspection by tests and the simulator.
    pub fn raw(&self) -> &RawNode {
        &self.raw
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The log storage, for tests that stall an
    /// [`InlineStorage`](crate::storage::InlineStorage).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Number of batches handed to storage and not yet reported durable.
    pub fn in_flight_batches(&self) -> usize {
        self.in_flight.len()
    }

    /// Ticks handed to the core since the node started. It grows while the
    /// event loop runs, whatever the disk does.
    pub fn tick_count(&self) -> u64 {
        self.ticks
    }

    /// Takes the entries applied since the last call, as (index, term).
    /// Empty unless [`NodeConfig::record_applied`] is set.
    pub fn take_applied_log(&mut self) -> Vec<(LogIndex, Term)> {
        std::mem::take(&mut self.applied_log)
    }

    pub fn raft_status(&self) -> raft_core::Status {
        self.raw.status()
    }

    pub fn status(&self) -> NodeStatus {
        let status = self.raw.status();
        NodeStatus {
            id: status.id,
            role: status.role,
            term: status.term,
            leader_id: status.leader,
            commit_index: status.commit_index,
            applied_index: self.kv.applied_index(),
        }
    }

    /// The time of the next tick; the loop never waits past it.
    pub fn next_deadline(&self) -> Instant {
        self.next_tick
    }

    /// Runs the event loop until `stop` returns true, checking it at least
    /// once per tick.
    ///
    /// # Errors
    ///
    /// Returns the first error that stops the node: a failed write or fsync
    /// of the log, a stopped writer thread, or a failed poller.
    pub fn run(&mut self, mut stop: impl FnMut() -> bool) -> Result<(), NodeError> {
        while !stop() {
            self.poll_once(None)?;
        }
        Ok(())
    }

    /// Runs one turn of the event loop, waiting for network events at most
    /// until the next tick, or `max_wait` or the storage's
    /// [`max_wait`](LogStorage::max_wait) when that is sooner.
    ///
    /// # Errors
    ///
    /// As [`Node::run`].
    pub fn poll_once(&mut self, max_wait: Option<Duration>) -> Result<(), NodeError> {
        let now = self.transport.now();
        let mut wait = self.next_tick.saturating_duration_since(now);
        if let Some(max_wait) = max_wait {
            wait = wait.min(max_wait);
        }
        if let Some(storage_wait) = self.storage.max_wait() {
            wait = wait.min(storage_wait);
        }
        let mut events = std::mem::take(&mut self.events);
        self.transport.poll(&mut events, Some(wait))?;
        self.account_missed_ticks();
        for event in events.drain(..) {
            self.handle_event(event);
        }
        self.events = events;

        let now = self.transport.now();
        for read in self.reads.expired(now) {
            self.respond(read.conn, read.id, unconfirmed_read());
        }
        if now >= self.next_tick {
            self.raw.tick();
            self.ticks += 1;
            self.next_tick = now + self.config.tick_interval;
        }
        self.release_persisted()?;
        self.handle_readies()?;

        // A storage whose maximum wait is zero (an `InlineStorage` with
        // queued batches) writes them here, so a turn ends with its log durable
        // unless the storage is stalled. The simulator relies on this: it
        // crashes nodes only between turns and then expects the commit index
        // to survive. The injected bug leaves the writes to the next turn,
        // after the acknowledgments left.
        while self.storage.max_wait() == Some(Duration::ZERO)
            && !raft_core::injected!(AckBeforeFsync)
        {
            self.release_persisted()?;
            self.handle_readies()?;
        }
        self.log_role_change();
        Ok(())
    }

    /// Logs a change of role, term or known leader, once per change.
    fn log_role_change(&mut self) {
        let status = self.raw.status();
        let observed = (status.role, status.term, status.leader);
        if self.last_observed == Some(observed) {
            return;
        }
        self.last_observed = Some(observed);
        tracing::info!(
            node = status.id.0,
            role = status.role.as_str(),
            term = status.term.0,
            leader = ?status.leader.map(|leader| leader.0),
            "role changed"
        );
    }

    /// Tells the core about ticks the loop missed, for example while the
    /// process was paused, before it handles any request: a read lease must
    /// expire by real time. The ticks are not replayed in a burst, which
    /// would start an election before the messages that waited are seen.
    fn account_missed_ticks(&mut self) {
        let now = self.transport.now();
        let interval = self.config.tick_interval;
        if now > self.next_tick + interval {
            let behind = now - self.next_tick;
            let missed = behind.as_nanos() / interval.as_nanos().max(1);
            self.raw.report_missed_ticks(missed as u64);
            self.next_tick += interval * missed as u32;
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::PeerRequest {
                conn,
                id,
                from,
                message,
            } => {
                if message.from != from {
                    tracing::warn!(
                        conn = conn.0,
                        peer = from.0,
                        claimed = message.from.0,
                        "dropping peer request whose sender differs from the handshake"
                    );
                    return;
                }
                let kind = message.body.name();
                match self.raw.step(message) {
                    Ok(()) => self
                        .peer_requests
                        .entry(from)
                        .or_default()
                        .push_back((conn, id)),
                    Err(error) => {
                        tracing::warn!(peer = from.0, kind, %error, "dropping peer request")
                    }
                }
            }
            Event::PeerResponse { peer, message, .. } => {
                if message.from != peer || message.is_request() {
                    tracing::warn!(peer = peer.0, "dropping malformed peer response");
                    return;
                }
                if let Err(error) = self.raw.step(message) {
                    tracing::warn!(peer = peer.0, %error, "dropping peer response");
                }
            }
            Event::RequestFailed { peer, .. } => self.raw.report_unreachable(peer),
            Event::ClientRequest { conn, id, request } => self.handle_client(conn, id, request),
            Event::ConnectionClosed { conn } => {
                self.pending.retain(|_, pending| pending.conn != conn);
                self.reads.drop_connection(conn);
            }
        }
    }

    fn handle_client(&mut self, conn: ConnId, id: RequestId, request: ClientRequest) {
        let command = match request {
            ClientRequest::Status => {
                let status = self.status();
                self.respond(conn, id, ClientResponse::Status(status));
                return;
            }
            ClientRequest::MoveLeader { target } => {
                let response = match self.raw.transfer_leader(target) {
                    Ok(()) => ClientResponse::TransferStarted { target },
                    Err(raft_core::LeaderError::UnknownNode(node)) => ClientResponse::Error {
                        kind: ClientErrorKind::InvalidRequest,
                        message: format!("node {node} is not a member of this cluster"),
                    },
                    Err(_) => self.not_leader(),
                };
                self.respond(conn, id, response);
                return;
            }
            ClientRequest::Put { key, value } => Command::Put { key, value },
            ClientRequest::Delete { key } => Command::Delete { key },
            ClientRequest::Get { key } => {
                self.start_read(conn, id, key);
                return;
            }
            ClientRequest::Cas {
                key,
                expected,
                value,
            } => Command::Cas {
                key,
                expected,
                value,
            },
        };
        if let Some(error) = check_command(&command) {
            self.respond(conn, id, error);
            return;
        }
        match self.raw.propose(command.encode()) {
            Ok((index, term)) => {
                let pending = PendingRequest { term, conn, id };
                if let Some(replaced) = self.pending.insert(index, pending) {
                    // An earlier proposal at this index was lost with an old
                    // term's log suffix.
                    self.respond(replaced.conn, replaced.id, unavailable());
                }
            }
            Err(raft_core::ProposeError::TransferInProgress { target }) => {
                let response = ClientResponse::Error {
                    kind: ClientErrorKind::Unavailable,
                    message: format!(
                        "leadership is moving to node {target}; retry on the new leader"
                    ),
                };
                self.respond(conn, id, response);
            }
            Err(raft_core::ProposeError::NotLeader { .. }) => {
                let response = self.not_leader();
                self.respond(conn, id, response);
            }
        }
    }

    /// Returns the reply to a request that only the leader serves, naming
    /// the last leader this node heard from.
    fn not_leader(&self) -> ClientResponse {
        let leader = self.raw.status().leader;
        let leader_client_addr = leader.and_then(|leader| {
            self.config
                .members
                .iter()
                .find(|member| member.id == leader)
                .map(|member| member.client_addr.clone())
        });
        ClientResponse::NotLeader {
            leader_id: leader,
            leader_client_addr,
        }
    }

    /// Carries out every `Ready` the core has: submit its entries and hard
    /// state to storage, send the messages that do not depend on them, and
    /// hold the rest of its work until storage reports the batch durable.
    fn handle_readies(&mut self) -> Result<(), NodeError> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            let mut held = HeldWork::default();
            for message in std::mem::take(&mut ready.messages) {
                let Some(outgoing) = self.pair_with_request(message) else {
                    continue;
                };
                // Safety: a message that reports or claims local state (a
                // response, a vote request) leaves only once that state is
                // durable, so it waits for this batch and every earlier one.
                // The injected bug sends it before the fsync.
                if outgoing.waits_for_durability() && !raft_core::injected!(AckBeforeFsync) {
                    held.messages.push(outgoing);
                } else {
                    self.send(outgoing);
                }
            }
            for state in &ready.read_states {
                if let Some(failed) = self.reads.confirm(*state) {
                    self.respond(failed.conn, failed.id, unconfirmed_read());
                }
            }
            held.committed = std::mem::take(&mut ready.committed_entries);

            if ready.entries.is_empty() && ready.hard_state.is_none() {
                // Nothing to persist, so advance reports nothing durable: it
                // lets the core recheck its commit index and the reads that
                // wait for it. The held work still follows every batch
                // submitted before it.
                self.raw.advance(&ready);
                if let Some(work) = self.in_flight.hold_behind_newest(held) {
                    self.release(work);
                }
                continue;
            }

            // Safety: the core learns that the entries are durable only from
            // `on_persisted`, when storage completes the batch, so a leader
            // never counts its own unsynced entries toward commit.
            let id = self.in_flight.allocate_id();
            let batch = PersistBatch {
                id,
                entries: std::mem::take(&mut ready.entries),
                hard_state: ready.hard_state,
                sync: ready.must_sync,
            };
            let last_entry = batch.last_entry();
            self.storage.submit(batch)?;
            self.in_flight.push(id, last_entry, held);
        }
        Ok(())
    }

    /// Reports the batches that storage completed to the core and releases
    /// the work that waited for them, oldest batch first.
    fn release_persisted(&mut self) -> Result<(), NodeError> {
        for completion in self.storage.completed()? {
            let released = self.in_flight.complete(completion)?;
            // A batch without entries carries only a hard state, and the
            // core needs no report for it.
            if let Some((index, term)) = released.last_entry {
                self.raw.on_persisted(index, term);
            }
            self.release(released.held);
        }
        Ok(())
    }

    /// Sends held messages in the order the core produced them, then
    /// applies held committed entries and serves the reads they allow.
    fn release(&mut self, work: HeldWork) {
        for outgoing in work.messages {
            self.send(outgoing);
        }
        for entry in &work.committed {
            self.apply(entry);
        }
        self.serve_reads();
    }

    /// Starts a linearizable read through ReadIndex. The response goes out
    /// once the read index is confirmed and applied.
    fn start_read(&mut self, conn: ConnId, id: RequestId, key: Vec<u8>) {
        if let Some(error) = check_command(&Command::Get { key: key.clone() }) {
            self.respond(conn, id, error);
            return;
        }
        let now = self.transport.now();
        let context = self.reads.start(conn, id, key, now);
        if self.raw.read_index(context).is_err() {
            self.reads.cancel(context);
            let response = self.not_leader();
            self.respond(conn, id, response);
        }
    }

    /// Responds to the confirmed reads whose index the state machine applied.
    fn serve_reads(&mut self) {
        for read in self.reads.servable(self.kv.applied_index()) {
            let value = self.kv.get(&read.key).map(<[u8]>::to_vec);
            self.respond(read.conn, read.id, ClientResponse::Value { value });
        }
    }

    /// Pairs a response with the peer request it answers. Returns `None`
    /// for a response without a request, which is dropped.
    fn pair_with_request(&mut self, message: Message) -> Option<Outgoing> {
        if message.is_request() {
            return Some(Outgoing::Request(message));
        }
        let to = message.to;
        let Some((conn, id)) = self
            .peer_requests
            .get_mut(&to)
            .and_then(VecDeque::pop_front)
        else {
            tracing::error!(
                peer = to.0,
                "dropping a response with no request to pair it with"
            );
            return None;
        };
        Some(Outgoing::Response { conn, id, message })
    }

    fn send(&mut self, outgoing: Outgoing) {
        match outgoing {
            Outgoing::Request(message) => {
                let to = message.to;
                if let Err(error) = self.transport.send(to, message) {
                    tracing::warn!(peer = to.0, %error, "failed to send peer request");
                }
            }
            Outgoing::Response { conn, id, message } => {
                let to = message.to;
                if let Err(error) = self.transport.respond_peer(conn, id, message) {
                    tracing::debug!(peer = to.0, %error, "peer response not delivered");
                }
            }
        }
    }

    fn apply(&mut self, entry: &Entry) {
        if self.config.record_applied {
            self.applied_log.push((entry.index, entry.term));
        }
        let applied = apply_to(&mut self.kv, entry);
        let Some(pending) = self.pending.remove(&entry.index) else {
            return;
        };
        let response = match applied {
            _ if pending.term != entry.term => unavailable(),
            Some(Applied::Written) => ClientResponse::Written { index: entry.index },
            Some(Applied::Deleted { existed }) => ClientResponse::Deleted {
                index: entry.index,
                existed,
            },
            Some(Applied::Swapped { succeeded, current }) => ClientResponse::Swapped {
                index: entry.index,
                succeeded,
                current,
            },
            Some(Applied::Value(value)) => ClientResponse::Value { value },
            None => ClientResponse::Error {
                kind: ClientErrorKind::Internal,
                message: format!("entry {} contains no valid command", entry.index),
            },
        };
        self.respond(pending.conn, pending.id, response);
    }

    fn respond(&mut self, conn: ConnId, id: RequestId, response: ClientResponse) {
        if let Err(error) = self.transport.respond_client(conn, id, response) {
            tracing::debug!(conn = conn.0, %error, "client response not delivered");
        }
    }
}

/// Applies one committed entry. Returns `None` for an entry without a
/// command: a leader's empty entry, or data that does not decode, which
/// every node skips alike.
fn apply_to(kv: &mut KvStore, entry: &Entry) -> Option<Applied> {
    if entry.kind == EntryKind::Noop {
        kv.skip(entry.index);
        return None;
    }
    match Command::decode(&entry.data) {
        Ok(command) => Some(kv.apply(entry.index, command)),
        Err(error) => {
            tracing::error!(index = entry.index.0, %error, "skipping committed entry with an invalid command");
            kv.skip(entry.index);
            None
        }
    }
}

fn check_command(command: &Command) -> Option<ClientResponse> {
    let (key, value_len) = match command {
        Command::Put { key, value } => (key, value.len()),
        Command::Cas {
            key,
            expected,
            value,
        } => (key, value.len().max(expected.as_ref().map_or(0, Vec::len))),
        Command::Delete { key } | Command::Get { key } => (key, 0),
    };
    let message = if key.is_empty() {
        "the key is empty".to_owned()
    } else if key.len() > MAX_KEY_LEN {
        format!(
            "the key has {} bytes, above the limit of {MAX_KEY_LEN}",
            key.len()
        )
    } else if value_len > MAX_VALUE_LEN {
        format!("the value has {value_len} bytes, above the limit of {MAX_VALUE_LEN}")
    } else {
        return None;
    };
    Some(ClientResponse::Error {
        kind: ClientErrorKind::InvalidRequest,
        message,
    })
}

fn unconfirmed_read() -> ClientResponse {
    ClientResponse::Error {
        kind: ClientErrorKind::Unavailable,
        message: "the leader could not confirm its leadership for this read; retry".to_owned(),
    }
}

fn unavailable() -> ClientResponse {
    ClientResponse::Error {
        kind: ClientErrorKind::Unavailable,
        message:
            "leadership changed before the request committed; it may or may not have taken effect"
                .to_owned(),
    }
}

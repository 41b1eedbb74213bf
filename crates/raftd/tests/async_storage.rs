//! The node driver with asynchronous log storage, on the in-memory network
//! with a virtual clock: a stalled disk must not stop the event loop, and
//! nothing that depends on the stalled writes may be acknowledged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_core::{LogIndex, NodeId, Role};
use raftd::cluster::Member;
use raftd::node::{Node, NodeConfig, NodeError};
use raftd::storage::{InlineStorage, LogStorage, ThreadedStorage};
use raftd::wal::{OsDisk, WalOptions};
use transport::{ClientRequest, ClientResponse, PeerAddr, RequestId, TransportConfig};
use transport_tcp_mem::{MemClient, MemNetwork, MemTransport};

const TICK: Duration = Duration::from_millis(10);
const STEP: Duration = Duration::from_millis(1);
const ELECTION_TICKS: u32 = 10;
/// Steps in one minimum election timeout.
const ELECTION_TIMEOUT_STEPS: u64 = ELECTION_TICKS as u64 * 10;

struct Cluster<S: LogStorage> {
    network: MemNetwork,
    nodes: BTreeMap<u64, Node<MemTransport, S>>,
    _dir: tempfile::TempDir,
}

fn members(size: u64) -> Vec<Member> {
    (1..=size)
        .map(|id| Member {
            id: NodeId(id),
            peer_addr: peer_addr(id),
            client_addr: client_addr(id),
        })
        .collect()
}

fn peer_addr(id: u64) -> String {
    format!("node-{id}:peer")
}

fn client_addr(id: u64) -> String {
    format!("node-{id}:client")
}

fn put(key: &str, value: &str) -> ClientRequest {
    ClientRequest::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

impl<S: LogStorage> Cluster<S> {
    /// Starts three nodes, each with the storage `build` makes around its
    /// transport and configuration.
    fn start(
        build: impl Fn(NodeConfig, MemTransport) -> Result<Node<MemTransport, S>, NodeError>,
    ) -> Cluster<S> {
        let size = 3;
        let network = MemNetwork::new();
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            let members = members(size);
            let peers = members
                .iter()
                .map(|member| PeerAddr {
                    id: member.id,
                    addr: member.peer_addr.clone(),
                })
                .collect();
            let mut transport_config =
                TransportConfig::new(NodeId(id), "async-storage".to_owned(), peers);
            transport_config.request_timeout = Duration::from_millis(50);
            let transport =
                MemTransport::new(&network, transport_config, &client_addr(id)).unwrap();
            let config = NodeConfig {
                id: NodeId(id),
                data_dir: dir.path().join(format!("node-{id}")),
                members,
                tick_interval: TICK,
                election_ticks: ELECTION_TICKS,
                wal: WalOptions::default(),
                seed: id,
                record_applied: false,
                max_entries_per_append: 1024,
                read_mode: raft_core::ReadMode::Safe,
            };
            nodes.insert(id, build(config, transport).unwrap());
        }
        Cluster {
            network,
            nodes,
            _dir: dir,
        }
    }

    /// Lets every node run one loop turn, then moves the clock by one step.
    fn step(&mut self) {
        for node in self.nodes.values_mut() {
            node.poll_once(Some(Duration::ZERO)).unwrap();
        }
        self.network.advance(STEP);
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.is_leader())
            .map(|(id, _)| *id)
            .collect()
    }

    fn run_until_leader(&mut self) -> u64 {
        for _ in 0..10_000 {
            self.step();
            if let [leader] = self.leaders()[..] {
                return leader;
            }
        }
        panic!("no single leader after 10 s of virtual time");
    }

    fn isolate(&self, id: u64) {
        for other in self.nodes.keys() {
            if *other != id {
                self.network.disconnect(&peer_addr(id), &peer_addr(*other));
            }
        }
    }
}

impl Cluster<InlineStorage<OsDisk>> {
    fn start_inline() -> Self {
        Cluster::start(|config, transport| Node::new(config, OsDisk, transport))
    }

    fn storage(&mut self, id: u64) -> &mut InlineStorage<OsDisk> {
        self.nodes.get_mut(&id).unwrap().storage_mut()
    }
}

/// Collects the responses `client` received to request `id`.
fn responses_to(client: &mut MemClient, id: RequestId, into: &mut Vec<ClientResponse>) {
    for (response_id, response) in client.poll().unwrap() {
        if response_id == id {
            into.push(response);
        }
    }
}

#[test]
fn stalled_isolated_leader_keeps_ticking_and_steps_down() {
    let mut cluster = Cluster::start_inline();
    let leader = cluster.run_until_leader();
    let mut client = MemClient::connect(&cluster.network, &client_addr(leader)).unwrap();
    // Let the client connection settle before the disk stalls.
    for _ in 0..5 {
        cluster.step();
    }
    let commit_before = cluster.nodes[&leader].raft_status().commit_index;

    cluster.storage(leader).stall();
    cluster.isolate(leader);
    let request = client.send(put("k", "v")).unwrap();
    let ticks_before = cluster.nodes[&leader].tick_count();

    let mut responses = Vec::new();
    let mut stepped_down_after = None;
    for step in 1..=3 * ELECTION_TIMEOUT_STEPS {
        cluster.step();
        responses_to(&mut client, request, &mut responses);
        let status = cluster.nodes[&leader].raft_status();
        if status.role == Role::Leader {
            assert_eq!(
                status.commit_index, commit_before,
                "a leader with a stalled disk must not commit"
            );
        } else if stepped_down_after.is_none() {
            stepped_down_after = Some(step);
        }
    }

    let node = &cluster.nodes[&leader];
    let ticks = node.tick_count() - ticks_before;
    assert!(
        ticks >= 3 * u64::from(ELECTION_TICKS) - 1,
        "the event loop ticked {ticks} times in three election timeouts"
    );
    assert!(
        node.in_flight_batches() > 0,
        "the stalled disk completed nothing"
    );
    assert!(node.storage().queued_len() > 0);
    // Check-quorum: a leader that hears from no quorum for an election
    // timeout steps down at its next check, so within two timeouts.
    let stepped_down_after = stepped_down_after.expect("the isolated leader steps down");
    assert!(
        stepped_down_after <= 2 * ELECTION_TIMEOUT_STEPS,
        "stepped down after {stepped_down_after} steps"
    );
    assert!(
        !responses
            .iter()
            .any(|response| matches!(response, ClientResponse::Written { .. })),
        "write acknowledged without a durable log: {responses:?}"
    );
    assert_eq!(node.kv().get(b"k"), None);

    // Once the disk and the network are back, the old leader follows the
    // new one and catches up.
    cluster.storage(leader).resume();
    cluster.network.heal();
    for _ in 0..20 * ELECTION_TIMEOUT_STEPS {
        cluster.step();
    }
    let new_leader = cluster.leaders();
    assert_eq!(new_leader.len(), 1, "leaders {new_leader:?}");
    assert_eq!(cluster.nodes[&leader].in_flight_batches(), 0);
    let applied: Vec<LogIndex> = cluster
        .nodes
        .values()
        .map(|node| node.kv().applied_index())
        .collect();
    assert!(
        applied.iter().all(|index| *index == applied[0]),
        "applied {applied:?}"
    );
}

#[test]
fn stalled_leader_acknowledges_write_after_resume() {
    let mut cluster = Cluster::start_inline();
    let leader = cluster.run_until_leader();
    let mut client = MemClient::connect(&cluster.network, &client_addr(leader)).unwrap();
    for _ in 0..5 {
        cluster.step();
    }
    let commit_before = cluster.nodes[&leader].raft_status().commit_index;

    cluster.storage(leader).stall();
    let request = client.send(put("k", "v")).unwrap();
    let mut responses = Vec::new();
    for _ in 0..ELECTION_TIMEOUT_STEPS {
        cluster.step();
        responses_to(&mut client, request, &mut responses);
    }
    assert_eq!(responses, Vec::new(), "no answer while the disk is stalled");
    let status = cluster.nodes[&leader].raft_status();
    assert_eq!(
        status.role,
        Role::Leader,
        "followers keep the leader in office"
    );
    assert_eq!(status.commit_index, commit_before);
    // The followers stored the entry: the leader's AppendEntries left before
    // its own write.
    for (id, node) in &cluster.nodes {
        if *id != leader {
            assert_eq!(
                node.raft_status().stable_index,
                status.last_index,
                "node {id}"
            );
        }
    }

    cluster.storage(leader).resume();
    for _ in 0..ELECTION_TIMEOUT_STEPS {
        cluster.step();
        responses_to(&mut client, request, &mut responses);
        if !responses.is_empty() {
            break;
        }
    }
    assert!(
        matches!(responses[..], [ClientResponse::Written { .. }]),
        "{responses:?}"
    );
    assert_eq!(cluster.nodes[&leader].kv().get(b"k"), Some(b"v".as_slice()));
}

#[test]
fn stalled_follower_withholds_vote() {
    let mut cluster = Cluster::start_inline();
    let leader = cluster.run_until_leader();
    let voters: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for voter in &voters {
        cluster.storage(*voter).stall();
    }
    // Without the leader, the followers elect one of them only once a vote
    // and the candidacy are durable.
    cluster.isolate(leader);
    for _ in 0..5 * ELECTION_TIMEOUT_STEPS {
        cluster.step();
        for voter in &voters {
            assert_ne!(
                cluster.nodes[voter].raft_status().role,
                Role::Leader,
                "node {voter} won an election with a stalled disk"
            );
        }
    }

    for voter in &voters {
        cluster.storage(*voter).resume();
    }
    let mut elected = None;
    for _ in 0..10 * ELECTION_TIMEOUT_STEPS {
        cluster.step();
        if let Some(voter) = voters.iter().find(|id| cluster.nodes[id].is_leader()) {
            elected = Some(*voter);
            break;
        }
    }
    assert!(elected.is_some(), "no election after the disks resumed");
}

/// Lets every node run loop turns until its storage has completed every
/// batch, so that one virtual millisecond covers the real fsyncs.
fn settle_threaded(cluster: &mut Cluster<ThreadedStorage>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in cluster.nodes.values_mut() {
        while node.in_flight_batches() > 0 {
            assert!(Instant::now() < deadline, "fsync took over 10 s");
            std::thread::sleep(Duration::from_micros(100));
            node.poll_once(Some(Duration::ZERO)).unwrap();
        }
    }
}

#[test]
fn threaded_storage_cluster_commits_writes() {
    let mut cluster = Cluster::start(|config, transport| {
        Node::with_storage(config, OsDisk, transport, |wal, dir| {
            ThreadedStorage::spawn(wal, dir, None)
        })
    });
    let mut leader = None;
    for _ in 0..10_000 {
        cluster.step();
        settle_threaded(&mut cluster);
        if let [id] = cluster.leaders()[..] {
            leader = Some(id);
            break;
        }
    }
    let leader = leader.expect("a leader within 10 s of virtual time");
    let mut client = MemClient::connect(&cluster.network, &client_addr(leader)).unwrap();

    for i in 0..20 {
        let request = client.send(put(&format!("key-{i}"), "v")).unwrap();
        let mut responses = Vec::new();
        for _ in 0..10_000 {
            cluster.step();
            settle_threaded(&mut cluster);
            responses_to(&mut client, request, &mut responses);
            if !responses.is_empty() {
                break;
            }
        }
        assert!(
            matches!(responses[..], [ClientResponse::Written { .. }]),
            "put {i}: {responses:?}"
        );
    }
    assert_eq!(
        cluster.nodes[&leader].kv().get(b"key-19"),
        Some(b"v".as_slice())
    );
}

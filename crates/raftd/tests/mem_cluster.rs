//! Three real node drivers, with their write-ahead logs on disk, on the
//! in-memory network: one thread, a virtual clock, the same run every time.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::{LogIndex, NodeId};
use raftd::cluster::Member;
use raftd::node::{Node, NodeConfig};
use raftd::storage::InlineStorage;
use raftd::wal::{OsDisk, Wal, WalOptions};
use transport::{ClientRequest, ClientResponse, PeerAddr, RequestId, TransportConfig};
use transport_tcp_mem::{MemClient, MemNetwork, MemTransport};

const TICK: Duration = Duration::from_millis(10);
const STEP: Duration = Duration::from_millis(1);

struct MemCluster {
    network: MemNetwork,
    nodes: BTreeMap<u64, Node<MemTransport, InlineStorage<OsDisk>>>,
    dir: tempfile::TempDir,
}

fn members(size: u64) -> Vec<Member> {
    (1..=size)
        .map(|id| Member {
            id: NodeId(id),
            peer_addr: format!("node-{id}:peer"),
            client_addr: format!("node-{id}:client"),
        })
        .collect()
}

impl MemCluster {
    fn start(size: u64) -> MemCluster {
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
                TransportConfig::new(NodeId(id), "mem-cluster".to_owned(), peers);
            transport_config.request_timeout = Duration::from_millis(50);
            let client_addr = members[(id - 1) as usize].client_addr.clone();
            let transport = MemTransport::new(&network, transport_config, &client_addr).unwrap();
            let config = NodeConfig {
                id: NodeId(id),
                data_dir: dir.path().join(format!("node-{id}")),
                members,
                tick_interval: TICK,
                election_ticks: 10,
                wal: WalOptions::default(),
                seed: id,
                record_applied: false,
                max_entries_per_append: 1024,
                read_mode: raft_core::ReadMode::Safe,
            };
            nodes.insert(id, Node::new(config, OsDisk, transport).unwrap());
        }
        MemCluster {
            network,
            nodes,
            dir,
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

    /// Sends `request` to node `id` and steps until the response arrives.
    fn call(&mut self, client: &mut MemClient, request: ClientRequest) -> ClientResponse {
        let id: RequestId = client.send(request).unwrap();
        for _ in 0..10_000 {
            self.step();
            for (response_id, response) in client.poll().unwrap() {
                if response_id == id {
                    return response;
                }
            }
        }
        panic!("no response after 10 s of virtual time");
    }
}

#[test]
fn three_nodes_elect_and_commit_hundred_proposals() {
    let mut cluster = MemCluster::start(3);
    let leader = cluster.run_until_leader();
    let leader_addr = format!("node-{leader}:client");
    let mut client = MemClient::connect(&cluster.network, &leader_addr).unwrap();

    for i in 0..100u32 {
        let request = ClientRequest::Put {
            key: format!("key-{}", i % 10).into_bytes(),
            value: i.to_string().into_bytes(),
        };
        let response = cluster.call(&mut client, request);
        assert!(
            matches!(response, ClientResponse::Written { .. }),
            "put {i}: {response:?}"
        );
    }
    // A follower responds to a put with the leader's address.
    let follower = if leader == 1 { 2 } else { 1 };
    let mut follower_client =
        MemClient::connect(&cluster.network, &format!("node-{follower}:client")).unwrap();
    let response = cluster.call(
        &mut follower_client,
        ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    );
    assert_eq!(
        response,
        ClientResponse::NotLeader {
            leader_id: Some(NodeId(leader)),
            leader_client_addr: Some(leader_addr),
        }
    );

    // Heartbeats carry the final commit index to the followers.
    for _ in 0..100 {
        cluster.step();
    }
    let applied: Vec<LogIndex> = cluster
        .nodes
        .values()
        .map(|node| node.kv().applied_index())
        .collect();
    assert!(applied[0] >= LogIndex(101), "applied {applied:?}");
    assert!(
        applied.iter().all(|index| *index == applied[0]),
        "applied {applied:?}"
    );
    for node in cluster.nodes.values() {
        for key in 0..10u32 {
            let expected = (90 + key).to_string();
            assert_eq!(
                node.kv().get(format!("key-{key}").as_bytes()),
                Some(expected.as_bytes()),
                "node {} key-{key}",
                node.id()
            );
        }
    }
    assert_eq!(cluster.leaders(), vec![leader]);

    // Every node stored the same entries, so each applied them in the same
    // order.
    let dir = cluster.dir.path().to_owned();
    drop(cluster.nodes);
    let logs: Vec<_> = (1..=3)
        .map(|id| {
            let wal_dir = dir.join(format!("node-{id}")).join("wal");
            let (_, recovered) = Wal::open(OsDisk, &wal_dir, WalOptions::default()).unwrap();
            recovered.entries
        })
        .collect();
    assert!(logs[0].len() >= 101);
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
}

#[test]
fn leader_isolated_then_new_leader_commits() {
    let mut cluster = MemCluster::start(3);
    let leader = cluster.run_until_leader();
    for other in 1..=3 {
        if other != leader {
            cluster.network.disconnect(
                &format!("node-{leader}:peer"),
                &format!("node-{other}:peer"),
            );
        }
    }
    let mut new_leader = None;
    for _ in 0..10_000 {
        cluster.step();
        let status: Vec<_> = cluster
            .nodes
            .iter()
            .filter(|(id, node)| **id != leader && node.is_leader())
            .map(|(id, _)| *id)
            .collect();
        if let [id] = status[..] {
            new_leader = Some(id);
            break;
        }
    }
    let new_leader = new_leader.expect("the majority elects a new leader");
    let mut client =
        MemClient::connect(&cluster.network, &format!("node-{new_leader}:client")).unwrap();
    let response = cluster.call(
        &mut client,
        ClientRequest::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    );
    assert!(
        matches!(response, ClientResponse::Written { .. }),
        "{response:?}"
    );

    cluster.network.heal();
    for _ in 0..2_000 {
        cluster.step();
    }
    assert_eq!(cluster.leaders(), vec![new_leader]);
    assert_eq!(
        cluster.nodes[&leader].kv().get(b"k"),
        Some(b"v".as_slice()),
        "the old leader catches up after the partition heals"
    );
}

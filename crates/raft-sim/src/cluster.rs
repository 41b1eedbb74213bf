//! The simulated cluster: real raftd nodes on the in-memory network and
//! simulated disks, with crashes, restarts and pauses.

use std::time::Duration;

use raft_core::{LogIndex, NodeId};
use raftd::cluster::Member;
use raftd::node::{Node, NodeConfig};
use raftd::storage::InlineStorage;
use raftd::wal::WalOptions;
use transport::{PeerAddr, TransportConfig};
use transport_tcp_mem::{MemNetwork, MemTransport};

use crate::disk::SimDisk;
use crate::rng::Rng;

/// The node's tick: the leader's heartbeat interval.
pub const TICK: Duration = Duration::from_millis(10);
/// Minimum election timeout in ticks; each node draws its own from
/// `[ELECTION_TICKS, 2 * ELECTION_TICKS)`.
pub const ELECTION_TICKS: u32 = 10;
/// The maximum election timeout, for sizing phases.
pub const MAX_ELECTION_TIMEOUT: Duration = Duration::from_millis(200);

pub type SimRaftNode = Node<MemTransport, InlineStorage<SimDisk>>;

/// One member of the simulated cluster, running or not.
pub struct SimNode {
    pub id: NodeId,
    pub node: Option<SimRaftNode>,
    pub disk: SimDisk,
    /// The node does not run until this time (a pause or a crash).
    pub down_until: Duration,
    /// Whether the node is paused rather than crashed: a paused node keeps
    /// its memory and connections.
    pub paused: bool,
    /// Speed of its clock in thousandths of the network's.
    pub clock_rate_permille: u32,
    /// Restarts so far, which vary its seed.
    pub restarts: u64,
}

pub fn peer_addr(id: NodeId) -> String {
    format!("node-{id}:peer")
}

pub fn client_addr(id: NodeId) -> String {
    format!("node-{id}:client")
}

pub fn members(size: u64) -> Vec<Member> {
    (1..=size)
        .map(|id| Member {
            id: NodeId(id),
            peer_addr: peer_addr(NodeId(id)),
            client_addr: client_addr(NodeId(id)),
        })
        .collect()
}

/// Errors that stop a simulated node for good: a failed start or a node
/// error. Either fails the seed.
#[derive(Debug, thiserror::Error)]
pub enum SimNodeError {
    #[error("node {id} failed to start: {source}")]
    Start {
        id: NodeId,
        #[source]
        source: raftd::node::NodeError,
    },
    #[error("node {id} stopped: {source}")]
    Run {
        id: NodeId,
        #[source]
        source: raftd::node::NodeError,
    },
}

pub struct SimCluster {
    pub network: MemNetwork,
    pub nodes: Vec<SimNode>,
    seed: u64,
    /// Small batches let an old entry reach a follower without the entries
    /// after it, which some safety bugs need to show.
    pub max_entries_per_append: usize,
    /// The way the nodes confirm reads: a heartbeat round or a lease.
    pub read_mode: raft_core::ReadMode,
}

impl SimCluster {
    pub fn new(seed: u64, size: u64, rng: &mut Rng) -> Result<SimCluster, SimNodeError> {
        let network = MemNetwork::with_seed(rng.next_u64());
        let nodes = (1..=size)
            .map(|id| SimNode {
                id: NodeId(id),
                node: None,
                disk: SimDisk::new(),
                down_until: Duration::ZERO,
                paused: false,
                clock_rate_permille: 1000,
                restarts: 0,
            })
            .collect();
        let mut cluster = SimCluster {
            network,
            nodes,
            seed,
            max_entries_per_append: *rng.pick(&[1, 2, 8, 1024]),
            read_mode: *rng.pick(&[raft_core::ReadMode::Safe, raft_core::ReadMode::Lease]),
        };
        for position in 0..cluster.nodes.len() {
            cluster.start(position)?;
        }
        Ok(cluster)
    }

    pub fn size(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn now(&self) -> Duration {
        self.network.elapsed()
    }

    /// Starts the node at `position` from its disk.
    pub fn start(&mut self, position: usize) -> Result<(), SimNodeError> {
        let size = self.size();
        let sim_node = &mut self.nodes[position];
        let id = sim_node.id;
        let members = members(size);
        let peers = members
            .iter()
            .map(|member| PeerAddr {
                id: member.id,
                addr: member.peer_addr.clone(),
            })
            .collect();
        let mut transport_config = TransportConfig::new(id, "sim".to_owned(), peers);
        transport_config.request_timeout = Duration::from_millis(50);
        transport_config.max_attempts = 2;
        transport_config.reconnect_backoff_min = Duration::from_millis(5);
        transport_config.reconnect_backoff_max = Duration::from_millis(100);
        let mut transport = MemTransport::new(&self.network, transport_config, &client_addr(id))
            .expect("addresses are free once the old transport is dropped");
        transport.set_clock_rate(sim_node.clock_rate_permille);
        let config = NodeConfig {
            id,
            data_dir: format!("/sim/node-{id}").into(),
            members,
            tick_interval: TICK,
            election_ticks: ELECTION_TICKS,
            wal: WalOptions {
                segment_size: 64 * 1024,
            },
            seed: self.seed ^ (id.0 << 48) ^ sim_node.restarts,
            record_applied: true,
            max_entries_per_append: self.max_entries_per_append,
            read_mode: self.read_mode,
        };
        let node = Node::new(config, sim_node.disk.clone(), transport)
            .map_err(|source| SimNodeError::Start { id, source })?;
        sim_node.node = Some(node);
        sim_node.paused = false;
        Ok(())
    }

    /// Crashes the node at `position`: its process and unsynced writes are
    /// gone, and it restarts at `restart_at`.
    pub fn crash(&mut self, position: usize, restart_at: Duration, rng: &mut Rng) {
        let sim_node = &mut self.nodes[position];
        sim_node.node = None;
        sim_node.disk.crash(&mut || rng.next_u64());
        sim_node.down_until = restart_at;
        sim_node.paused = false;
        sim_node.restarts += 1;
    }

    /// Pauses the node at `position` until `until`, as a long garbage
    /// collection or a stopped process would.
    pub fn pause(&mut self, position: usize, until: Duration) {
        let sim_node = &mut self.nodes[position];
        if sim_node.node.is_some() {
            sim_node.down_until = until;
            sim_node.paused = true;
        }
    }

    /// Whether the node at `position` is running and not paused now.
    pub fn is_up(&self, position: usize) -> bool {
        let sim_node = &self.nodes[position];
        sim_node.node.is_some() && sim_node.down_until <= self.now()
    }

    /// Runs one loop turn on every node that is up, restarting crashed
    /// nodes whose time has come. Returns the positions of nodes that
    /// restarted.
    pub fn step_nodes(&mut self) -> Result<Vec<usize>, SimNodeError> {
        let now = self.now();
        let mut restarted = Vec::new();
        for position in 0..self.nodes.len() {
            let sim_node = &mut self.nodes[position];
            if sim_node.node.is_none() && sim_node.down_until <= now {
                self.start(position)?;
                restarted.push(position);
            }
            let sim_node = &mut self.nodes[position];
            if sim_node.down_until > now {
                continue;
            }
            let id = sim_node.id;
            if let Some(node) = sim_node.node.as_mut() {
                node.poll_once(Some(Duration::ZERO))
                    .map_err(|source| SimNodeError::Run { id, source })?;
            }
        }
        Ok(restarted)
    }

    /// The position of a node that runs and believes it leads, if any.
    pub fn leader_position(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.node.as_ref().is_some_and(|node| node.is_leader()))
    }

    /// The node's applied index, if it runs.
    pub fn applied_index(&self, position: usize) -> Option<LogIndex> {
        self.nodes[position]
            .node
            .as_ref()
            .map(|node| node.kv().applied_index())
    }
}

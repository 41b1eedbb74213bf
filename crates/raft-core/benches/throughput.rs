//! Committed entries per second of three in-process `RawNode`s that hand
//! each other their messages directly: no serialization, no IO, no clock.
//! Persistence is instant (`advance` right after `ready`), so this measures
//! the algorithm's own cost.
//!
//! ```text
//! cargo bench -p raft-core --bench throughput
//! cargo bench -p raft-core --bench throughput -- committed_entries::16   # 16-byte entries only
//! ```
//!
//! Each iteration starts from a fresh cluster with an elected leader and an
//! empty log, proposes `ENTRIES` entries of `PAYLOAD` bytes in batches of
//! the given size, and delivers messages until the leader has committed
//! them all. A batch of 1 proposes one entry and waits for its commit
//! before the next, which is the unbatched case. A last heartbeat round
//! then carries the commit index to the followers, and the iteration checks
//! that every node applied every entry. Nodes use [`Config::new`] defaults,
//! as `raftd` does, so one AppendEntries carries at most 1,024 entries.
//!
//! Divan reports items per second, where an item is one committed entry.
//! Building the cluster and dropping it afterwards are not timed.

use divan::Bencher;
use divan::counter::ItemsCount;
use raft_core::{Config, HardState, LogIndex, Message, NodeId, RawNode, Role};

/// Entries committed per benchmark iteration.
const ENTRIES: usize = 8192;

fn main() {
    divan::main();
}

/// Three nodes with node 1 as leader.
struct Cluster {
    nodes: Vec<RawNode>,
    queue: Vec<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config::new(*id, voters.clone());
                RawNode::new(config, HardState::default(), Vec::new(), LogIndex(0))
                    .expect("valid configuration")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            queue: Vec::new(),
        };
        // Only node 1 ticks, so it alone times out and wins.
        while cluster.nodes[0].status().role != Role::Leader {
            cluster.nodes[0].tick();
            cluster.pump();
        }
        cluster
    }

    /// Carries out every Ready and delivers every message until all is
    /// quiet. Persisting is `advance` alone, and applying drops the
    /// committed entries.
    fn pump(&mut self) {
        loop {
            for node in &mut self.nodes {
                while node.has_ready() {
                    let ready = node.ready();
                    node.advance(&ready);
                    self.queue.extend(ready.messages);
                }
            }
            if self.queue.is_empty() {
                return;
            }
            for message in self.queue.drain(..) {
                let to = message.to.0 as usize - 1;
                self.nodes[to]
                    .step(message)
                    .expect("messages stay inside the cluster");
            }
        }
    }

    /// Proposes `ENTRIES` entries of `PAYLOAD` bytes in batches of `batch`,
    /// delivering messages after each batch, until the leader has committed
    /// them all. Then sends one heartbeat so that the followers commit and
    /// apply the last batch too.
    fn commit_entries<const PAYLOAD: usize>(&mut self, batch: usize) {
        let target = LogIndex(self.nodes[0].status().commit_index.0 + ENTRIES as u64);
        let payload = [7u8; PAYLOAD];
        let mut proposed = 0;
        while proposed < ENTRIES {
            for _ in 0..batch.min(ENTRIES - proposed) {
                self.nodes[0]
                    .propose(payload.to_vec())
                    .expect("node 1 leads");
                proposed += 1;
            }
            self.pump();
        }
        assert_eq!(self.nodes[0].status().commit_index, target);

        // One tick is a heartbeat interval under `Config::new` defaults.
        self.nodes[0].tick();
        self.pump();
        for node in &self.nodes {
            assert_eq!(node.status().applied_index, target, "node {}", node.id());
        }
    }
}

#[divan::bench(consts = [16, 64], args = [1, 16, 64, 256, 1024, 4096])]
fn committed_entries<const PAYLOAD: usize>(bencher: Bencher, batch: usize) {
    bencher
        .counter(ItemsCount::new(ENTRIES))
        .with_inputs(Cluster::new)
        .bench_local_values(|mut cluster| {
            cluster.commit_entries::<PAYLOAD>(batch);
            // Returned so that divan drops it outside the timed section.
            cluster
        });
}

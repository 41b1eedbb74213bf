//! Committed entries per second of three in-process `RawNode`s that hand
//! each other their messages directly: no serialization, no IO, no clock.
//! Persistence is instant (`advance` right after `ready`), so this measures
//! the algorithm's own cost.
//!
//! ```text
//! cargo bench -p raft-core --bench throughput
//! ```
//!
//! Each iteration proposes `ENTRIES` entries of 16 bytes in batches of the
//! given size and delivers messages until the leader has committed them all.
//! A batch of 1 proposes one entry and waits for its commit before the next,
//! which is the unbatched case. Divan reports items per second, where an
//! item is one committed entry.

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
                let mut config = Config::new(*id, voters.clone());
                config.max_entries_per_append = 4096;
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
    /// quiet.
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

    fn commit_index(&self) -> LogIndex {
        self.nodes[0].status().commit_index
    }

    /// Proposes `ENTRIES` entries in batches of `batch`, delivering messages
    /// after each batch, until all are committed.
    fn commit_entries(&mut self, batch: usize) {
        let target = LogIndex(self.commit_index().0 + ENTRIES as u64);
        let payload = [7u8; 16];
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
        assert_eq!(self.commit_index(), target);
    }
}

#[divan::bench(args = [1, 16, 256, 1024, 4096])]
fn committed_entries(bencher: Bencher, batch: usize) {
    let mut cluster = Cluster::new();
    bencher
        .counter(ItemsCount::new(ENTRIES))
        .bench_local(|| cluster.commit_entries(batch));
}

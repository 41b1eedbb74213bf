//! Scenario tests that run several nodes in memory, delivering messages by
//! hand so each test controls exactly which messages arrive.

mod election;
mod features;
mod persistence;
mod replication;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::{
    Config, Entry, EntryKind, HardState, LogIndex, Message, NodeId, RawNode, ReadState, Role, Term,
};

/// What a node's storage holds: written by `Ready`, read back at restart.
#[derive(Clone, Debug, Default)]
struct Stored {
    hard_state: HardState,
    entries: Vec<Entry>,
}

impl Stored {
    fn persist(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state;
        }
        if let Some(first) = entries.first() {
            self.entries.truncate(first.index.0 as usize - 1);
            self.entries.extend_from_slice(entries);
        }
    }
}

/// Nodes joined by a message queue that tests deliver from explicitly.
struct Cluster {
    config: Config,
    nodes: BTreeMap<NodeId, RawNode>,
    stored: BTreeMap<NodeId, Stored>,
    /// Entries each node applied, in order, across restarts.
    applied: BTreeMap<NodeId, Vec<Entry>>,
    queue: VecDeque<Message>,
    /// Directed links (from, to) whose messages are dropped.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Every (term, leader) pair seen, for the election-safety check.
    leaders: BTreeSet<(Term, NodeId)>,
    /// Read results each node handed out.
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Messages delivered so far.
    delivered: usize,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        Cluster::with_config(size, |_| {})
    }

    fn with_config(size: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let mut config = Config::new(NodeId(1), voters.clone());
        // The scenarios test the basic rules unless they switch the
        // extensions on themselves.
        config.pre_vote = false;
        config.check_quorum = false;
        adjust(&mut config);
        let mut cluster = Cluster {
            config,
            nodes: BTreeMap::new(),
            stored: BTreeMap::new(),
            applied: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            leaders: BTreeSet::new(),
            reads: BTreeMap::new(),
            delivered: 0,
        };
        for id in voters {
            cluster.stored.insert(id, Stored::default());
            cluster.applied.insert(id, Vec::new());
            cluster.start(id);
        }
        cluster
    }

    /// Starts `id` from what its storage holds.
    fn start(&mut self, id: NodeId) {
        let mut config = self.config.clone();
        config.id = id;
        config.seed = id.0 * 7919;
        let stored = self.stored[&id].clone();
        let applied = LogIndex(self.applied[&id].len() as u64).min(stored.hard_state.commit);
        let node = RawNode::new(config, stored.hard_state, stored.entries, applied).unwrap();
        self.nodes.insert(id, node);
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
    }

    fn node(&self, id: u64) -> &RawNode {
        &self.nodes[&NodeId(id)]
    }

    fn node_mut(&mut self, id: u64) -> &mut RawNode {
        self.nodes.get_mut(&NodeId(id)).unwrap()
    }

    /// Carries out every pending `Ready`: persist, queue messages, apply.
    fn process_readies(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).unwrap();
            while node.has_ready() {
                let ready = node.ready();
                self.stored
                    .get_mut(&id)
                    .unwrap()
                    .persist(ready.hard_state, &ready.entries);
                self.queue.extend(ready.messages.iter().cloned());
                self.applied
                    .get_mut(&id)
                    .unwrap()
                    .extend(ready.committed_entries.iter().cloned());
                self.reads
                    .entry(id)
                    .or_default()
                    .extend(ready.read_states.iter().copied());
                node.advance(&ready);
            }
            let status = node.status();
            if status.role == Role::Leader {
                self.leaders.insert((status.term, id));
            }
        }
    }

    /// Delivers queued messages that `keep` accepts until nothing is left,
    /// dropping the others and those on cut links or to crashed nodes.
    fn deliver_filtered(&mut self, mut keep: impl FnMut(&Message) -> bool) {
        loop {
            self.process_readies();
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if !keep(&message) || self.cut.contains(&(message.from, message.to)) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&message.to) {
                self.delivered += 1;
                node.step(message).unwrap();
            }
        }
    }

    fn deliver(&mut self) {
        self.deliver_filtered(|_| true);
    }

    /// Makes `id` campaign now and delivers the election's messages.
    fn campaign(&mut self, id: u64) {
        self.node_mut(id).campaign(false);
        self.deliver();
    }

    /// Ticks every running node `count` times, delivering messages after
    /// each tick.
    fn tick_all(&mut self, count: u32) {
        for _ in 0..count {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.nodes.get_mut(&id).unwrap().tick();
            }
            self.deliver();
        }
    }

    fn isolate(&mut self, id: u64) {
        for other in self.config.voters.clone() {
            self.cut.insert((NodeId(id), other));
            self.cut.insert((other, NodeId(id)));
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn propose(&mut self, id: u64, data: &[u8]) -> (LogIndex, Term) {
        self.node_mut(id).propose(data.to_vec()).unwrap()
    }

    fn log_terms(&self, id: u64) -> Vec<u64> {
        self.stored[&NodeId(id)]
            .entries
            .iter()
            .map(|entry| entry.term.0)
            .collect()
    }

    /// The data of the normal entries a node applied, in order.
    fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied[&NodeId(id)]
            .iter()
            .filter(|entry| entry.kind == EntryKind::Normal)
            .map(|entry| entry.data.clone())
            .collect()
    }

    /// Asserts that no term had two leaders.
    fn check_election_safety(&self) {
        let mut terms = BTreeSet::new();
        for (term, leader) in &self.leaders {
            assert!(
                terms.insert(*term),
                "term {term} had two leaders, one of them {leader}: {:?}",
                self.leaders
            );
        }
    }
}

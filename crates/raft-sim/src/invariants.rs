//! The safety properties checked after every simulation step, each a named
//! check with its own violation.

use std::collections::BTreeMap;
use std::fmt;

use raft_core::{Entry, LogIndex, NodeId, RawNode, Role, Term};

/// A broken safety property, with the values that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two nodes led the same term.
    ElectionSafety {
        term: Term,
        first: NodeId,
        second: NodeId,
    },
    /// Two logs hold an entry with the same index and term but different
    /// contents or different predecessors.
    LogMatching {
        node: NodeId,
        index: LogIndex,
        term: Term,
    },
    /// A node's log differs from an entry that was committed.
    CommittedEntryChanged {
        node: NodeId,
        index: LogIndex,
        committed_term: Term,
        found_term: Option<Term>,
    },
    /// A leader's log lacks an entry committed before.
    LeaderCompleteness {
        node: NodeId,
        term: Term,
        index: LogIndex,
    },
    /// A node applied an entry out of order, twice, or one that differs from
    /// the committed entry at its index.
    StateMachineSafety {
        node: NodeId,
        index: LogIndex,
        expected: LogIndex,
    },
    /// A node lacks a committed entry, yet its log is at least as up to
    /// date as the logs of a majority, so it could win an election and
    /// replace the entry.
    CommittedEntryAtRisk {
        node: NodeId,
        index: LogIndex,
        voters: Vec<NodeId>,
    },
    /// A node's commit or applied index decreased, across a restart too.
    IndexMovedBackwards {
        node: NodeId,
        pointer: &'static str,
        from: LogIndex,
        to: LogIndex,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ElectionSafety {
                term,
                first,
                second,
            } => write!(
                f,
                "election safety: nodes {first} and {second} both led term {term}"
            ),
            Violation::LogMatching { node, index, term } => write!(
                f,
                "log matching: node {node} holds entry {index} of term {term} with contents or predecessors unlike another node's"
            ),
            Violation::CommittedEntryChanged {
                node,
                index,
                committed_term,
                found_term,
            } => write!(
                f,
                "committed entry changed: node {node} has term {found_term:?} at index {index}, committed with term {committed_term}"
            ),
            Violation::LeaderCompleteness { node, term, index } => write!(
                f,
                "leader completeness: node {node} leads term {term} without committed entry {index}"
            ),
            Violation::StateMachineSafety {
                node,
                index,
                expected,
            } => write!(
                f,
                "state machine safety: node {node} applied entry {index} where entry {expected} was due, or an entry unlike the committed one"
            ),
            Violation::CommittedEntryAtRisk {
                node,
                index,
                voters,
            } => write!(
                f,
                "committed entry at risk: node {node} lacks committed entry {index}, yet nodes {voters:?}, a majority, would vote for it"
            ),
            Violation::IndexMovedBackwards {
                node,
                pointer,
                from,
                to,
            } => write!(
                f,
                "{pointer} index of node {node} moved backwards from {from} to {to}"
            ),
        }
    }
}

/// The checks' record of one node, kept across its restarts.
#[derive(Debug, Default)]
struct NodeRecord {
    /// The terms of the node's log as last verified, by index - 1.
    verified_terms: Vec<Term>,
    commit: LogIndex,
    applied: LogIndex,
}

/// The cluster-wide record the checks compare every node against.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The leader of each term seen so far.
    leaders: BTreeMap<Term, NodeId>,
    /// Content hash and predecessor term of every (index, term) seen in any
    /// log. Equal keys must map to equal values (log matching).
    entries: BTreeMap<(LogIndex, Term), (u64, Term)>,
    /// Term and content hash of each committed index, by index - 1.
    committed: Vec<(Term, u64)>,
    /// For each committed index, the term of the node that first reported
    /// it committed: at or after the term in which it committed.
    committed_in: Vec<Term>,
    nodes: BTreeMap<NodeId, NodeRecord>,
}

fn entry_hash(entry: &Entry) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let kind = [entry.kind as u8];
    for byte in kind.iter().chain(&entry.data) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Invariants {
    pub fn new() -> Invariants {
        Invariants::default()
    }

    /// The highest index known committed anywhere.
    pub fn max_committed(&self) -> LogIndex {
        LogIndex(self.committed.len() as u64)
    }

    /// Checks one running node after a step.
    ///
    /// # Errors
    ///
    /// Returns the first property the node breaks.
    pub fn check_node(&mut self, raw: &RawNode) -> Result<(), Violation> {
        let status = raw.status();
        let id = status.id;
        let mut new_leader = false;
        if status.role == Role::Leader {
            let leader = *self.leaders.entry(status.term).or_insert_with(|| {
                new_leader = true;
                id
            });
            if leader != id {
                return Err(Violation::ElectionSafety {
                    term: status.term,
                    first: leader,
                    second: id,
                });
            }
        }
        self.check_log(id, raw)?;
        self.check_commit(id, raw)?;
        if new_leader {
            // A leader never truncates its log, so checking its prefix once
            // per term suffices: later commits come from that log.
            self.check_leader_completeness(raw)?;
        }
        Ok(())
    }

    /// Verifies the node's log entries that changed since the last check.
    fn check_log(&mut self, id: NodeId, raw: &RawNode) -> Result<(), Violation> {
        let last = raw.status().last_index.0 as usize;
        let record = self.nodes.entry(id).or_default();

        // The log changes only at its tail: find where it differs from
        // what was verified, walking back from the shorter end.
        let mut same = record.verified_terms.len().min(last);
        while same > 0
            && raw.term_at(LogIndex(same as u64)) != Some(record.verified_terms[same - 1])
        {
            same -= 1;
        }
        record.verified_terms.truncate(same);

        for position in same..last {
            let index = LogIndex(position as u64 + 1);
            let entry = raw.entry(index).expect("index within the log");
            let prev_term = raw.term_at(index.prev()).unwrap_or(Term(0));
            let value = (entry_hash(entry), prev_term);
            let known = *self.entries.entry((index, entry.term)).or_insert(value);
            if known != value {
                return Err(Violation::LogMatching {
                    node: id,
                    index,
                    term: entry.term,
                });
            }
            // A node may keep a stale entry where the cluster committed
            // another until its leader repairs it. Only entries up to its own
            // commit index must match.
            let within_commit = index <= raw.status().commit_index;
            if let Some(&(term, hash)) = self.committed.get(position)
                && within_commit
                && (term != entry.term || hash != value.0)
            {
                return Err(Violation::CommittedEntryChanged {
                    node: id,
                    index,
                    committed_term: term,
                    found_term: Some(entry.term),
                });
            }
            self.nodes
                .get_mut(&id)
                .expect("inserted above")
                .verified_terms
                .push(entry.term);
        }
        Ok(())
    }

    /// Registers newly committed entries and checks the commit index never
    /// decreases.
    fn check_commit(&mut self, id: NodeId, raw: &RawNode) -> Result<(), Violation> {
        let commit = raw.status().commit_index;
        let record = self.nodes.entry(id).or_default();
        if commit < record.commit {
            return Err(Violation::IndexMovedBackwards {
                node: id,
                pointer: "commit",
                from: record.commit,
                to: commit,
            });
        }
        let start = record.commit.0 as usize;
        record.commit = commit;
        for position in start..commit.0 as usize {
            let index = LogIndex(position as u64 + 1);
            let entry = raw.entry(index).expect("committed entries are in the log");
            let value = (entry.term, entry_hash(entry));
            match self.committed.get(position) {
                Some(known) if *known != value => {
                    return Err(Violation::CommittedEntryChanged {
                        node: id,
                        index,
                        committed_term: known.0,
                        found_term: Some(entry.term),
                    });
                }
                Some(_) => {}
                None => {
                    self.committed.push(value);
                    self.committed_in.push(raw.status().term);
                }
            }
        }
        Ok(())
    }

    /// Checks that a new leader holds every entry committed in an earlier
    /// term. A leader of an older term (one that won an election late, after
    /// a pause) need not hold entries committed since.
    fn check_leader_completeness(&self, raw: &RawNode) -> Result<(), Violation> {
        let status = raw.status();
        for (position, (term, hash)) in self.committed.iter().enumerate() {
            if self.committed_in[position] >= status.term {
                continue;
            }
            let index = LogIndex(position as u64 + 1);
            let holds = raw
                .entry(index)
                .is_some_and(|entry| entry.term == *term && entry_hash(entry) == *hash);
            if !holds {
                return Err(Violation::LeaderCompleteness {
                    node: status.id,
                    term: status.term,
                    index,
                });
            }
        }
        Ok(())
    }

    /// Checks that no running node lacking a committed entry could collect
    /// a majority of votes from the running nodes: every voter holding the
    /// entry has a more up-to-date log. This is the lemma behind leader
    /// completeness, and it fails as soon as an entry commits unsafely,
    /// before a later leader actually replaces it. Crashed nodes count as
    /// voters that refuse, which can only hide a violation.
    ///
    /// # Errors
    ///
    /// Returns the first node that could win without a committed entry.
    pub fn check_election_risk(&self, nodes: &[&RawNode], quorum: usize) -> Result<(), Violation> {
        let last: Vec<(Term, LogIndex)> = nodes
            .iter()
            .map(|raw| {
                let status = raw.status();
                (status.last_term, status.last_index)
            })
            .collect();
        for (position, raw) in nodes.iter().enumerate() {
            let Some(index) = self.first_missing_committed(raw) else {
                continue;
            };
            let voters: Vec<NodeId> = nodes
                .iter()
                .zip(&last)
                .filter(|(_, voter_last)| last[position] >= **voter_last)
                .map(|(voter, _)| voter.status().id)
                .collect();
            if voters.len() >= quorum {
                return Err(Violation::CommittedEntryAtRisk {
                    node: raw.status().id,
                    index,
                    voters,
                });
            }
        }
        Ok(())
    }

    /// The first committed index whose entry the node lacks or holds with
    /// another term.
    fn first_missing_committed(&self, raw: &RawNode) -> Option<LogIndex> {
        let status = raw.status();
        // Entries up to the node's own commit index were matched against
        // the record when they committed there.
        let start = status.commit_index.0 as usize;
        for position in start..self.committed.len() {
            let index = LogIndex(position as u64 + 1);
            if raw.term_at(index) != Some(self.committed[position].0) {
                return Some(index);
            }
        }
        None
    }

    /// Checks entries a node applied, in order: each must be the committed
    /// entry at the next index.
    ///
    /// # Errors
    ///
    /// Returns a state machine safety violation for an entry applied out of
    /// order, twice, or unlike the committed entry.
    pub fn check_applied(
        &mut self,
        id: NodeId,
        applied: &[(LogIndex, Term)],
    ) -> Result<(), Violation> {
        for &(index, term) in applied {
            let record = self.nodes.entry(id).or_default();
            let expected = record.applied.next();
            let committed_term = self
                .committed
                .get(index.0 as usize - 1)
                .map(|(term, _)| *term);
            if index != expected || committed_term.is_some_and(|committed| committed != term) {
                return Err(Violation::StateMachineSafety {
                    node: id,
                    index,
                    expected,
                });
            }
            record.applied = index;
        }
        Ok(())
    }

    /// Checks a restarted node's applied index against the one it had
    /// before the crash, and continues its record from there.
    ///
    /// # Errors
    ///
    /// Returns a violation when the restarted node applied less than before.
    pub fn check_restart(&mut self, id: NodeId, applied: LogIndex) -> Result<(), Violation> {
        let record = self.nodes.entry(id).or_default();
        if applied < record.applied {
            return Err(Violation::IndexMovedBackwards {
                node: id,
                pointer: "applied",
                from: record.applied,
                to: applied,
            });
        }
        record.applied = applied;
        Ok(())
    }
}

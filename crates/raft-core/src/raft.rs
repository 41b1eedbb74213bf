//! The node: its role, term and vote, timers, and the ready/advance cycle.
//! Elections live in `election.rs` and log replication in `replication.rs`.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::rand::SplitMix64;
use crate::ready::Ready;
use crate::types::{Entry, EntryKind, HardState, LogIndex, NodeId, Role, Term};

/// Why [`RawNode::step`] rejected a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("message addressed to node {to}, but this is node {own}")]
    WrongRecipient { to: NodeId, own: NodeId },
    #[error("message from node {0}, which is not a member")]
    UnknownSender(NodeId),
}

/// Why [`RawNode::propose`] rejected a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("this node is not the leader; the last known leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
}

/// A snapshot of a node's state, for status reports and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    /// The last index handed out for applying.
    pub applied_index: LogIndex,
    /// The last index known durable on this node.
    pub stable_index: LogIndex,
    pub last_index: LogIndex,
    pub last_term: Term,
}

/// One Raft node.
#[derive(Debug)]
pub struct RawNode {
    pub(crate) config: Config,
    pub(crate) role: Role,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,

    /// Ticks since the election timer was last reset.
    pub(crate) election_elapsed: u32,
    /// This term's election timeout, drawn from the random source.
    pub(crate) election_timeout: u32,
    pub(crate) heartbeat_elapsed: u32,
    rng: SplitMix64,

    /// Votes received in the current election, by voter.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// The leader's view of each other voter.
    pub(crate) progress: BTreeMap<NodeId, Progress>,

    /// On a follower, the highest commit index learned from the leader for
    /// entries that match its log. The commit index follows it as those
    /// entries become durable.
    pub(crate) commit_target: LogIndex,
    /// Messages produced since the last `Ready`.
    pub(crate) messages: Vec<Message>,
    /// The hard state as of the last `Ready`.
    last_hard_state: HardState,
}

impl RawNode {
    /// Creates a node from its durable state: the hard state and every log
    /// entry, as recovered from storage. `applied` is the last index the
    /// state machine already reflects (0 for a state machine rebuilt from the
    /// log); the node hands out committed entries after it.
    ///
    /// # Errors
    ///
    /// Returns an error when the configuration is invalid.
    ///
    /// # Panics
    ///
    /// Panics when the entries are not contiguous from index 1, or when
    /// `applied` exceeds the commit index.
    pub fn new(
        config: Config,
        hard_state: HardState,
        entries: Vec<Entry>,
        applied: LogIndex,
    ) -> Result<RawNode, ConfigError> {
        config.validate()?;
        let last = LogIndex(entries.len() as u64);
        // A commit index above the durable log would be a storage bug; cap
        // it rather than apply entries this node does not have.
        let committed = hard_state.commit.min(last);
        let log = RaftLog::restore(entries, committed, applied);
        let rng = SplitMix64::new(config.seed);
        let mut node = RawNode {
            role: Role::Follower,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            log,
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            rng,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            commit_target: committed,
            messages: Vec::new(),
            last_hard_state: HardState {
                commit: committed,
                ..hard_state
            },
            config,
        };
        node.reset_election_timer();
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit_index: self.log.committed(),
            applied_index: self.log.applied(),
            stable_index: self.log.stable(),
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        }
    }

    /// The term of the entry at `index`, if the log has it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if the log has it (durable or not).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Follower | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    self.campaign();
                }
            }
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.config.heartbeat_tick {
                    self.heartbeat_elapsed = 0;
                    self.broadcast_heartbeat();
                }
            }
        }
        self.debug_check();
    }

    /// Appends a command to the log. Returns its index and term; the command
    /// took effect once the entry at that index commits with that term.
    ///
    /// # Errors
    ///
    /// Returns [`ProposeError::NotLeader`] on a follower or candidate.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        let index = self.append_entry(EntryKind::Normal, data);
        self.broadcast_append();
        self.debug_check();
        Ok((index, self.term))
    }

    /// Handles a message from a peer. A request yields exactly one response
    /// among the next `Ready`'s messages.
    ///
    /// # Errors
    ///
    /// Rejects a message addressed to another node or sent by a non-member,
    /// without answering it.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        if message.to != self.config.id {
            return Err(StepError::WrongRecipient {
                to: message.to,
                own: self.config.id,
            });
        }
        if message.from == self.config.id || !self.config.voters.contains(&message.from) {
            return Err(StepError::UnknownSender(message.from));
        }

        if message.term > self.term {
            // A newer term deposes this node. An AppendEntries names the new
            // leader; a vote request does not.
            let leader = match message.body {
                MessageBody::AppendEntries { .. } => Some(message.from),
                _ => None,
            };
            self.become_follower(message.term, leader);
        } else if message.term < self.term {
            self.reject_stale(message);
            self.debug_check();
            return Ok(());
        }

        match message.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
            } => self.handle_request_vote(message.from, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { granted } => {
                self.handle_vote_response(message.from, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append_entries(
                message.from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            ),
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_hint,
                last_index: _,
            } => self.handle_append_response(message.from, success, match_index, reject_hint),
        }
        self.debug_check();
        Ok(())
    }

    /// Tells the leader that a message to `peer` was lost, so it stops
    /// streaming to that peer and probes it again on the next heartbeat.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.become_probe();
        }
    }

    /// Whether [`RawNode::ready`] has work to hand out.
    pub fn has_ready(&self) -> bool {
        !self.messages.is_empty()
            || self.log.has_unpersisted()
            || self.log.has_committed_to_apply()
            || self.hard_state() != self.last_hard_state
    }

    /// Takes the work produced since the last call.
    pub fn ready(&mut self) -> Ready {
        let hard_state = self.hard_state();
        let changed = hard_state != self.last_hard_state;
        self.last_hard_state = hard_state;

        let entries = self.log.take_unpersisted();
        Ready {
            hard_state: changed.then_some(hard_state),
            must_sync: changed || !entries.is_empty(),
            entries,
            messages: std::mem::take(&mut self.messages),
            committed_entries: self.log.take_committed(),
        }
    }

    /// Acknowledges that `ready` was carried out: its entries and hard state
    /// are durable and its messages were handed to the transport. A caller
    /// that persists on another thread calls [`RawNode::on_persisted`]
    /// instead, once the storage reports the entries durable.
    pub fn advance(&mut self, ready: &Ready) {
        match ready.entries.last() {
            Some(last) => self.on_persisted(last.index, last.term),
            None => self.refresh_commit(),
        }
    }

    /// Reports that the log is durable up to `index`, whose entry had `term`
    /// when it was handed out. Entries handed out in several `Ready`s may be
    /// reported at once by their last one. A report for an entry replaced
    /// since is ignored, so a late report is harmless.
    pub fn on_persisted(&mut self, index: LogIndex, term: Term) {
        self.log.persisted_to(index, term);
        self.refresh_commit();
    }

    fn refresh_commit(&mut self) {
        if self.role == Role::Leader {
            self.maybe_commit();
        } else {
            // A follower may have learned a commit index above its durable
            // log; it takes effect as the log becomes durable.
            self.follower_commit_to(self.pending_commit());
        }
        self.debug_check();
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let min = self.config.election_tick;
        self.election_timeout = self.rng.range(min, 2 * min);
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timer();
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term: self.term,
            body,
        });
    }

    /// The other voters, in id order.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let own = self.config.id;
        self.config
            .voters
            .iter()
            .copied()
            .filter(|&id| id != own)
            .collect()
    }

    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> LogIndex {
        let index = self.log.last_index().next();
        self.log.append(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        index
    }

    /// Answers a message from an earlier term: a request gets a rejection
    /// that carries this node's term, so its sender steps down; a response
    /// is dropped.
    fn reject_stale(&mut self, message: Message) {
        match message.body {
            MessageBody::RequestVote { .. } => self.send(
                message.from,
                MessageBody::RequestVoteResponse { granted: false },
            ),
            MessageBody::AppendEntries { prev_log_index, .. } => {
                let body = self.append_rejection(prev_log_index);
                self.send(message.from, body);
            }
            MessageBody::RequestVoteResponse { .. } | MessageBody::AppendEntriesResponse { .. } => {
            }
        }
    }

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            self.log.check_invariants();
            if self.role == Role::Leader {
                assert_eq!(self.leader, Some(self.config.id));
                assert_eq!(self.vote, Some(self.config.id));
            }
        }
    }
}

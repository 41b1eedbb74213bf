//! The node: its role, term and vote, timers, and the ready/advance cycle.
//! Elections live in `election.rs` and log replication in `replication.rs`.

use std::collections::{BTreeMap, VecDeque};

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::rand::SplitMix64;
use crate::read::PendingRead;
use crate::ready::{ReadState, Ready};
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
    #[error("leadership is moving to node {target}; retry on the new leader")]
    TransferInProgress { target: NodeId },
}

/// Why [`RawNode::read_index`] or [`RawNode::transfer_leader`] was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderError {
    #[error("this node knows no leader")]
    NoLeader,
    #[error("this node is not the leader; the last known leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("node {0} is not a voter of this cluster")]
    UnknownNode(NodeId),
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

    /// Votes received in the current election or pre-vote, by voter.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Whether a pre-vote is under way: the node learns whether it could win
    /// the next term before it raises its own.
    pub(crate) pre_candidate: bool,
    /// The leader's view of each other voter.
    pub(crate) progress: BTreeMap<NodeId, Progress>,

    /// On a follower, the highest commit index learned from the leader for
    /// entries that match its log. The commit index follows it as those
    /// entries become durable.
    pub(crate) commit_target: LogIndex,
    /// Messages produced since the last `Ready`.
    pub(crate) messages: Vec<Message>,
    /// Whether proposals since the last `Ready` still wait to be sent; they
    /// go out together in one AppendEntries per follower.
    pub(crate) broadcast_pending: bool,
    /// The node leadership is being handed to, and ticks since it started.
    pub(crate) transfer: Option<(NodeId, u32)>,
    /// Ticks since the node started, the clock of read leases.
    pub(crate) ticks: u64,
    /// The current read round: every heartbeat broadcast starts one.
    pub(crate) read_round: u64,
    /// The tick each recent read round started at, for leases.
    pub(crate) round_ticks: VecDeque<(u64, u64)>,
    /// Reads waiting for a quorum to acknowledge their round.
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Whether reads wait for a round that the next `Ready` starts.
    pub(crate) read_round_pending: bool,
    /// Reads waiting for the leader's first commit in its term.
    pub(crate) reads_before_commit: Vec<(u64, Option<NodeId>)>,
    /// Read results for the next `Ready`.
    pub(crate) read_states: Vec<ReadState>,
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
            pre_candidate: false,
            commit_target: committed,
            messages: Vec::new(),
            broadcast_pending: false,
            transfer: None,
            ticks: 0,
            read_round: 0,
            round_ticks: VecDeque::new(),
            pending_reads: VecDeque::new(),
            read_round_pending: false,
            reads_before_commit: Vec::new(),
            read_states: Vec::new(),
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
        self.ticks += 1;
        self.election_elapsed += 1;
        match self.role {
            Role::Follower | Role::Candidate => {
                if self.election_elapsed >= self.election_timeout {
                    self.start_election();
                }
            }
            Role::Leader => self.tick_leader(),
        }
        self.debug_check();
    }

    /// Tells the node that `count` ticks passed without [`RawNode::tick`]
    /// calls, for example while its process was paused. They count against
    /// read leases, which must expire by real time, but they start no
    /// election: the caller handles the messages that waited first.
    pub fn report_missed_ticks(&mut self, count: u64) {
        self.ticks += count;
    }

    fn tick_leader(&mut self) {
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if let Some((target, elapsed)) = self.transfer {
            // A transfer that did not finish within an election timeout is
            // abandoned, and the leader accepts proposals again.
            if elapsed + 1 >= self.config.election_tick {
                self.transfer = None;
            } else {
                self.transfer = Some((target, elapsed + 1));
            }
        }
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum, this leader included, responded since the last
    /// check; clears the marks for the next round.
    fn quorum_active(&mut self) -> bool {
        let mut active = 1;
        for progress in self.progress.values_mut() {
            if progress.recent_active {
                active += 1;
            }
            progress.recent_active = false;
        }
        active >= self.config.quorum()
    }

    /// Whether this node heard from a leader within the last election
    /// timeout, so that it rejects candidates (leader stickiness).
    pub(crate) fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_tick
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
        if let Some((target, _)) = self.transfer {
            return Err(ProposeError::TransferInProgress { target });
        }
        let index = self.append_entry(EntryKind::Normal, data);
        self.broadcast_pending = true;
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

        if self.step_without_term(&message) {
            self.debug_check();
            return Ok(());
        }

        if message.term > self.term {
            // A newer term deposes this node. An AppendEntries names the new
            // leader; other messages do not.
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
                transfer: _,
            } => self.handle_request_vote(message.from, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { granted } => {
                self.handle_vote_response(message.from, granted)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            } => self.handle_append_entries(
                message.from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            ),
            MessageBody::AppendEntriesResponse { read_round, .. } => {
                let from = message.from;
                self.handle_append_response(from, message.body);
                self.handle_read_ack(from, read_round);
            }
            MessageBody::TimeoutNow => {
                self.send(message.from, MessageBody::Ack);
                if self.role != Role::Leader {
                    self.campaign(true);
                }
            }
            MessageBody::ReadIndex { context } => {
                self.send(message.from, MessageBody::Ack);
                self.handle_follower_read(message.from, context);
            }
            MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::ReadIndexReply { .. }
            | MessageBody::Ack => {
                unreachable!("handled by step_without_term")
            }
        }
        self.debug_check();
        Ok(())
    }

    /// Handles the messages whose term must not change this node's: vote
    /// requests rejected under leader stickiness, pre-votes, read replies
    /// and acknowledgments. Returns whether the message was handled.
    fn step_without_term(&mut self, message: &Message) -> bool {
        match message.body {
            MessageBody::RequestVote { transfer, .. }
                if message.term > self.term && self.in_lease() && !transfer =>
            {
                // A node that heard from its leader within an election
                // timeout rejects a candidate without adopting its term, so
                // a node rejoining after a partition cannot depose a
                // healthy leader.
                self.send(
                    message.from,
                    MessageBody::RequestVoteResponse { granted: false },
                );
                true
            }
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_pre_vote(message.from, message.term, last_log_index, last_log_term);
                true
            }
            MessageBody::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(message.from, message.term, granted);
                true
            }
            MessageBody::ReadIndexReply { context, index } => {
                self.send(message.from, MessageBody::Ack);
                self.read_states.push(ReadState { context, index });
                true
            }
            MessageBody::Ack => true,
            _ => false,
        }
    }

    /// Tells the leader that a message to `peer` was lost, so it stops
    /// streaming to that peer and probes it again on the next heartbeat.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(progress) = self.progress.get_mut(&peer) {
            progress.become_probe();
        }
    }

    /// Hands leadership to `target`: the leader stops accepting proposals,
    /// brings the target's log up to date, and then sends it TimeoutNow so
    /// that it starts an election at once. The transfer is abandoned after an election
    /// timeout without success.
    ///
    /// # Errors
    ///
    /// Returns [`LeaderError::NotLeader`] on a follower or candidate, and
    /// [`LeaderError::UnknownNode`] when `target` is not a voter.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), LeaderError> {
        if self.role != Role::Leader {
            return Err(LeaderError::NotLeader {
                leader: self.leader,
            });
        }
        if !self.config.voters.contains(&target) {
            return Err(LeaderError::UnknownNode(target));
        }
        if target == self.config.id {
            return Ok(());
        }
        self.transfer = Some((target, 0));
        self.send_timeout_now_if_caught_up(target);
        self.debug_check();
        Ok(())
    }

    /// The node leadership is moving to, while a transfer is under way.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(target, _)| target)
    }

    pub(crate) fn send_timeout_now_if_caught_up(&mut self, target: NodeId) {
        let last_index = self.log.last_index();
        let caught_up = self
            .progress
            .get(&target)
            .is_some_and(|progress| progress.match_index == last_index);
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.broadcast_pending = true;
        }
    }

    /// Whether [`RawNode::ready`] has work to hand out.
    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || self.read_round_pending
            || !self.read_states.is_empty()
            || !self.messages.is_empty()
            || self.log.has_unpersisted()
            || self.log.has_committed_to_apply()
            || self.hard_state() != self.last_hard_state
    }

    /// Takes the work produced since the last call.
    pub fn ready(&mut self) -> Ready {
        if self.broadcast_pending {
            self.broadcast_pending = false;
            if self.role == Role::Leader {
                self.broadcast_append();
            }
        }
        if self.read_round_pending {
            self.read_round_pending = false;
            if self.role == Role::Leader
                && self
                    .pending_reads
                    .back()
                    .is_some_and(|read| read.round > self.read_round)
            {
                self.broadcast_heartbeat();
            }
        }
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
            read_states: std::mem::take(&mut self.read_states),
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
            self.release_reads_before_commit();
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
        if self.role == Role::Leader {
            // A deposed leader must not serve reads it has not confirmed.
            self.fail_pending_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.pre_candidate = false;
        self.transfer = None;
        self.votes.clear();
        self.progress.clear();
        self.reset_election_timer();
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term,
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
            MessageBody::AppendEntries {
                prev_log_index,
                read_round,
                ..
            } => {
                let body = self.append_rejection(prev_log_index, read_round);
                self.send(message.from, body);
            }
            MessageBody::TimeoutNow => self.send(message.from, MessageBody::Ack),
            MessageBody::ReadIndex { context } => {
                self.send(message.from, MessageBody::Ack);
                let reply = MessageBody::ReadIndexReply {
                    context,
                    index: None,
                };
                self.send(message.from, reply);
            }
            MessageBody::RequestVoteResponse { .. }
            | MessageBody::AppendEntriesResponse { .. }
            | MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::ReadIndexReply { .. }
            | MessageBody::Ack => {}
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

//! Linearizable reads without log writes: ReadIndex and leases.
//!
//! A read on the leader takes the commit index as its read index, once the
//! leader has committed an entry of its own term (before that, its commit
//! index may lag entries committed by earlier leaders). The leader then
//! confirms that it still leads: it starts a read round with a heartbeat,
//! and the read is ready once a quorum acknowledged that round or a later
//! one. The caller serves the read when its state machine has applied the
//! read index. A follower forwards reads to the leader and gets the read
//! index back.

use crate::config::ReadMode;
use crate::message::MessageBody;
use crate::raft::{LeaderError, RawNode};
use crate::ready::ReadState;
use crate::types::{LogIndex, NodeId, Role};

/// Read rounds remembered for leases; older rounds are too old to matter.
const ROUNDS_KEPT: usize = 64;

/// A read waiting for a quorum to acknowledge its round.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    context: u64,
    /// The follower that asked, or `None` for a read of this node's caller.
    from: Option<NodeId>,
    index: LogIndex,
    pub(crate) round: u64,
}

impl RawNode {
    /// Requests a linearizable read. The result arrives in a later
    /// [`Ready::read_states`](crate::Ready::read_states) under `context`:
    /// serve the read once the state machine has applied its index, or fail
    /// it when the index is `None`.
    ///
    /// # Errors
    ///
    /// Returns [`LeaderError::NoLeader`] on a node that knows no leader.
    pub fn read_index(&mut self, context: u64) -> Result<(), LeaderError> {
        match (self.role, self.leader) {
            (Role::Leader, _) => self.leader_read(context, None),
            (_, Some(leader)) => self.send(leader, MessageBody::ReadIndex { context }),
            (_, None) => return Err(LeaderError::NoLeader),
        }
        Ok(())
    }

    pub(crate) fn handle_follower_read(&mut self, follower: NodeId, context: u64) {
        if self.role == Role::Leader {
            self.leader_read(context, Some(follower));
        } else {
            let reply = MessageBody::ReadIndexReply {
                context,
                index: None,
            };
            self.send(follower, reply);
        }
    }

    fn leader_read(&mut self, context: u64, from: Option<NodeId>) {
        if !self.committed_in_current_term() {
            self.reads_before_commit.push((context, from));
            return;
        }
        let index = self.log.committed();
        // A single voter is its own quorum. The injected bug serves the read
        // without confirming leadership.
        if self.config.voters.len() == 1 || self.lease_valid() || crate::injected!(ReadWithoutRound)
        {
            self.finish_read(context, from, Some(index));
            return;
        }
        // Every read until the next Ready shares one round: the heartbeat
        // goes out when the Ready is taken.
        let round = self.read_round + 1;
        self.pending_reads.push_back(PendingRead {
            context,
            from,
            index,
            round,
        });
        self.read_round_pending = true;
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed()) == Some(self.term)
    }

    /// Registers the reads that waited for the first commit of this term.
    pub(crate) fn release_reads_before_commit(&mut self) {
        if self.reads_before_commit.is_empty() || !self.committed_in_current_term() {
            return;
        }
        for (context, from) in std::mem::take(&mut self.reads_before_commit) {
            self.leader_read(context, from);
        }
    }

    /// Starts a read round; the next heartbeats carry its number.
    pub(crate) fn start_read_round(&mut self) {
        self.read_round += 1;
        self.round_ticks.push_back((self.read_round, self.ticks));
        if self.round_ticks.len() > ROUNDS_KEPT {
            self.round_ticks.pop_front();
        }
    }

    /// Records that `follower` acknowledged a message of read round `round`
    /// in this term, and finishes the reads a quorum has now confirmed.
    pub(crate) fn handle_read_ack(&mut self, follower: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.progress.get_mut(&follower)
            && round > progress.read_round
        {
            progress.read_round = round;
        }
        let confirmed = self.quorum_round();
        while self
            .pending_reads
            .front()
            .is_some_and(|read| read.round <= confirmed)
        {
            let read = self.pending_reads.pop_front().expect("checked above");
            self.finish_read(read.context, read.from, Some(read.index));
        }
    }

    /// The highest read round a quorum, this leader included, acknowledged.
    fn quorum_round(&self) -> u64 {
        let mut rounds: Vec<u64> = self
            .progress
            .values()
            .map(|progress| progress.read_round)
            .collect();
        rounds.push(self.read_round);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds[self.config.quorum() - 1]
    }

    /// Whether a quorum acknowledged a round started within the lease, so a
    /// lease read needs no round of its own.
    fn lease_valid(&self) -> bool {
        if self.config.read_mode != ReadMode::Lease {
            return false;
        }
        let confirmed = self.quorum_round();
        let lease_ticks = u64::from(self.config.election_tick.saturating_sub(2));
        self.round_ticks
            .iter()
            .find(|(round, _)| *round == confirmed)
            .is_some_and(|(_, started)| self.ticks < started + lease_ticks)
    }

    fn finish_read(&mut self, context: u64, from: Option<NodeId>, index: Option<LogIndex>) {
        match from {
            None => self.read_states.push(ReadState { context, index }),
            Some(follower) => self.send(follower, MessageBody::ReadIndexReply { context, index }),
        }
    }

    /// Fails every read not yet confirmed: a leader that stepped down can
    /// no longer prove that its read index is current.
    pub(crate) fn fail_pending_reads(&mut self) {
        let pending: Vec<(u64, Option<NodeId>)> = self
            .pending_reads
            .drain(..)
            .map(|read| (read.context, read.from))
            .chain(self.reads_before_commit.drain(..))
            .collect();
        for (context, from) in pending {
            self.finish_read(context, from, None);
        }
    }
}

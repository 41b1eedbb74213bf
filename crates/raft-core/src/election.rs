//! Leader election: campaigns, votes and the switch to leader.

use crate::message::MessageBody;
use crate::progress::Progress;
use crate::raft::RawNode;
use crate::types::{EntryKind, LogIndex, NodeId, Role, Term};

impl RawNode {
    /// Starts an election after an election timeout: a pre-vote first when
    /// enabled, a campaign otherwise.
    pub(crate) fn start_election(&mut self) {
        if self.config.pre_vote {
            self.pre_campaign();
        } else {
            self.campaign(false);
        }
    }

    /// Asks the other voters whether they would vote for this node in the
    /// next term, without raising its own term.
    fn pre_campaign(&mut self) {
        self.pre_candidate = true;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.granted_votes() >= self.config.quorum() {
            self.campaign(false);
            return;
        }
        let next_term = self.term.next();
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.peers() {
            let body = MessageBody::PreVote {
                last_log_index,
                last_log_term,
            };
            self.send_with_term(peer, next_term, body);
        }
    }

    /// Grants a pre-vote for `term` when it is later than this node's term,
    /// the candidate's log is at least as up to date, and this node has not
    /// heard from a leader within an election timeout. Changes no state.
    pub(crate) fn handle_pre_vote(
        &mut self,
        candidate: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let granted = term > self.term
            && !self.in_lease()
            && self.log_check_for_vote(last_log_index, last_log_term);
        let response_term = if granted { term } else { self.term };
        self.send_with_term(
            candidate,
            response_term,
            MessageBody::PreVoteResponse { granted },
        );
    }

    pub(crate) fn handle_pre_vote_response(&mut self, voter: NodeId, term: Term, granted: bool) {
        if !granted && term > self.term {
            // The voter is in a later term: adopt it, as for any message.
            self.become_follower(term, None);
            return;
        }
        if !self.pre_candidate || (granted && term != self.term.next()) {
            return;
        }
        self.votes.insert(voter, granted);
        let quorum = self.config.quorum();
        if self.granted_votes() >= quorum {
            self.campaign(false);
        } else if self.votes.values().filter(|granted| !**granted).count() >= quorum {
            self.pre_candidate = false;
        }
    }

    /// Starts an election in the next term, voting for itself. `transfer`
    /// marks an election the leader asked for with TimeoutNow.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        self.pre_candidate = false;
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.progress.clear();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();

        if self.granted_votes() >= self.config.quorum() {
            self.become_leader();
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.peers() {
            self.send(
                peer,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
        }
    }

    /// Grants the vote when this node has not voted for someone else in this
    /// term, does not follow a leader in it, and the candidate's log is at
    /// least as up to date as its own.
    pub(crate) fn handle_request_vote(
        &mut self,
        candidate: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let free_to_vote =
            self.vote == Some(candidate) || (self.vote.is_none() && self.leader.is_none());
        let granted = free_to_vote && self.log_check_for_vote(last_log_index, last_log_term);
        if granted {
            self.vote = Some(candidate);
            self.reset_election_timer();
        }
        self.send(candidate, MessageBody::RequestVoteResponse { granted });
    }

    fn log_check_for_vote(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        self.log.is_up_to_date(last_log_index, last_log_term)
            || crate::injected!(VoteWithoutLogCheck)
    }

    pub(crate) fn handle_vote_response(&mut self, voter: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(voter, granted);
        let quorum = self.config.quorum();
        if self.granted_votes() >= quorum {
            self.become_leader();
        } else if self.votes.values().filter(|granted| !**granted).count() >= quorum {
            self.become_follower(self.term, None);
        }
    }

    fn granted_votes(&self) -> usize {
        self.votes.values().filter(|granted| **granted).count()
    }

    /// Takes leadership of the current term. The leader appends an empty
    /// entry of its term at once: until an entry of its own term commits,
    /// it cannot commit the entries it inherited.
    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index().next();
        self.progress = self
            .peers()
            .into_iter()
            .map(|peer| (peer, Progress::new(next)))
            .collect();
        self.append_entry(EntryKind::Noop, Vec::new());
        self.broadcast_append();
    }
}

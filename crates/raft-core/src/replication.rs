//! Log replication: the leader's AppendEntries, the follower's handling of
//! them, and the commit rule.

use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::raft::RawNode;
use crate::types::{Entry, LogIndex, NodeId, Role, Term};

impl RawNode {
    /// Sends new entries to every follower that can take them.
    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_entries(peer);
        }
    }

    /// Sends a heartbeat to every follower: the next probe to a follower in
    /// the probe state, and an empty AppendEntries at its match index to one
    /// in the replicate state.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.start_read_round();
        for peer in self.peers() {
            let Some(progress) = self.progress.get_mut(&peer) else {
                continue;
            };
            if progress.state == ProgressState::Probe {
                progress.probe_sent = false;
                self.send_append(peer, true);
            } else {
                let match_index = progress.match_index;
                progress.heartbeat_check = Some((self.read_round, progress.next_index.prev()));
                self.send_heartbeat(peer, match_index);
                self.send_entries(peer);
            }
        }
    }

    /// Streams entries to `peer` until it has them all or its window is full.
    fn send_entries(&mut self, peer: NodeId) {
        while self.send_append(peer, false) {}
    }

    /// Sends one AppendEntries from the peer's next index. Returns whether a
    /// message was sent. Without `allow_empty`, sends nothing when the peer
    /// already has every entry.
    fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get(&peer) else {
            return false;
        };
        if !progress.can_send(
            self.config.max_inflight_appends,
            self.config.max_inflight_bytes,
        ) {
            return false;
        }
        if progress.next_index > last_index && !allow_empty {
            return false;
        }
        let prev_log_index = progress.next_index.prev();
        let prev_log_term = self
            .log
            .term(prev_log_index)
            .expect("a follower's next index never passes the leader's last index + 1");
        let entries = if progress.next_index <= last_index {
            self.log.slice(
                progress.next_index,
                last_index,
                self.config.max_entries_per_append,
                self.config.max_bytes_per_append,
            )
        } else {
            Vec::new()
        };
        let last_sent = LogIndex(prev_log_index.0 + entries.len() as u64);
        let sent_entries = !entries.is_empty();
        let bytes = entries.iter().map(Entry::size).sum();

        let progress = self.progress.get_mut(&peer).expect("checked above");
        if sent_entries || progress.state == ProgressState::Probe {
            progress.on_sent(last_sent, bytes);
        }
        let leader_commit = self.log.committed();
        let read_round = self.read_round;
        self.send(
            peer,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            },
        );
        sent_entries
    }

    fn send_heartbeat(&mut self, peer: NodeId, match_index: LogIndex) {
        let prev_log_term = self
            .log
            .term(match_index)
            .expect("a follower's match index never passes the leader's last index");
        // The follower's log is known to match only up to its match index, so
        // the commit index it may adopt from this message stops there too.
        let leader_commit = self.log.committed().min(match_index);
        let read_round = self.read_round;
        self.send(
            peer,
            MessageBody::AppendEntries {
                prev_log_index: match_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit,
                read_round,
            },
        );
    }

    pub(crate) fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_round: u64,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term would break election safety; refuse the
            // message instead of adopting the sender.
            let body = self.append_rejection(prev_log_index, read_round);
            self.send(leader, body);
            return;
        }
        if self.role == Role::Candidate || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.reset_election_timer();

        let well_formed = entries.iter().enumerate().all(|(offset, entry)| {
            entry.index.0 == prev_log_index.0 + 1 + offset as u64
                && entry.term >= prev_log_term
                && entry.term <= self.term
        });
        if !well_formed || !self.log.matches(prev_log_index, prev_log_term) {
            let body = self.append_rejection(prev_log_index, read_round);
            self.send(leader, body);
            return;
        }

        self.log.merge(&entries);
        let last_new = LogIndex(prev_log_index.0 + entries.len() as u64);
        self.commit_target = self.commit_target.max(leader_commit.min(last_new));
        self.follower_commit_to(self.commit_target);
        self.send(
            leader,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: last_new,
                reject_hint: LogIndex(0),
                last_index: self.log.last_index(),
                conflict_term: None,
                read_round,
            },
        );
    }

    /// The rejection of an AppendEntries whose previous entry did not
    /// match, with the hints for fast backtracking: the term of the
    /// conflicting entry and the first index of that term here.
    pub(crate) fn append_rejection(
        &self,
        prev_log_index: LogIndex,
        read_round: u64,
    ) -> MessageBody {
        let last_index = self.log.last_index();
        let (conflict_term, reject_hint) = match self.log.term(prev_log_index) {
            Some(term) if prev_log_index > LogIndex(0) => {
                let mut first = prev_log_index;
                while first > LogIndex(1) && self.log.term(first.prev()) == Some(term) {
                    first = first.prev();
                }
                (Some(term), first)
            }
            _ => (None, last_index.min(prev_log_index.prev())),
        };
        MessageBody::AppendEntriesResponse {
            success: false,
            match_index: LogIndex(0),
            reject_hint,
            last_index,
            conflict_term,
            read_round,
        }
    }

    pub(crate) fn handle_append_response(&mut self, follower: NodeId, response: MessageBody) {
        let MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_hint,
            last_index: follower_last,
            conflict_term,
            read_round,
        } = response
        else {
            return;
        };
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        // The index the next probe checks: the end of the leader's own run
        // of the conflicting term when it has one, so that one round trip
        // skips the whole term; otherwise just before the follower's first
        // entry of that term, or at the follower's last index.
        let probe_at = match conflict_term {
            Some(term) => self
                .log
                .last_index_of_term(term)
                .unwrap_or_else(|| reject_hint.prev()),
            None => reject_hint,
        };
        let Some(progress) = self.progress.get_mut(&follower) else {
            return;
        };
        progress.recent_active = true;
        if success {
            if match_index > last_index {
                return;
            }
            if let Some((round, sent_last)) = progress.heartbeat_check
                && round == read_round
            {
                progress.heartbeat_check = None;
                if follower_last < sent_last && progress.state == ProgressState::Replicate {
                    // Entries sent before the heartbeat never arrived: send
                    // them again from the match index.
                    progress.become_probe();
                }
            }
            if progress.on_success(match_index) {
                self.maybe_commit();
            }
            self.send_entries(follower);
            if self.transfer.is_some_and(|(target, _)| target == follower) {
                self.send_timeout_now_if_caught_up(follower);
            }
        } else if crate::injected!(BacktrackPastConflict) {
            // The injected bug takes the follower's hint as a match instead
            // of probing it.
            if progress.on_success(probe_at.min(last_index)) {
                self.maybe_commit();
            }
            self.send_entries(follower);
        } else if progress.on_reject(probe_at.min(last_index)) {
            self.send_append(follower, true);
        }
    }

    /// Commits the highest index stored durably on a quorum, counting this
    /// node's own log only up to its stable index. Only an entry of the
    /// current term commits by counting; earlier entries commit with it.
    pub(crate) fn maybe_commit(&mut self) {
        let own = self.config.id;
        let mut matched: Vec<LogIndex> = self
            .config
            .voters
            .iter()
            .map(|id| {
                if *id == own {
                    self.log.stable()
                } else {
                    self.progress
                        .get(id)
                        .map_or(LogIndex(0), |progress| progress.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.config.quorum() - 1];
        let current_term = self.log.term(candidate) == Some(self.term);
        if candidate > self.log.committed()
            && (current_term || crate::injected!(CommitPreviousTerm))
        {
            self.log.commit_to(candidate);
        }
    }

    pub(crate) fn follower_commit_to(&mut self, target: LogIndex) {
        self.log.commit_to(target);
    }

    pub(crate) fn pending_commit(&self) -> LogIndex {
        self.commit_target
    }
}

//! A leader's view of how far each follower's log matches its own.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader sends entries to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// The leader does not know where the follower's log matches. It sends
    /// one AppendEntries at a time and waits for the answer (or the next
    /// heartbeat) before sending another.
    Probe,
    /// The follower's log matches up to `match_index`. The leader streams
    /// AppendEntries optimistically, up to a window of in-flight messages.
    Replicate,
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) state: ProgressState,
    /// The highest index known to be replicated and durable on the follower.
    pub(crate) match_index: LogIndex,
    /// The next index to send.
    pub(crate) next_index: LogIndex,
    /// In the probe state, whether a probe is outstanding.
    pub(crate) probe_sent: bool,
    /// In the replicate state, the last index and entry bytes of each
    /// AppendEntries in flight, oldest first.
    inflight: VecDeque<(LogIndex, usize)>,
    inflight_bytes: usize,
    /// Whether the follower responded since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The highest read round the follower acknowledged in this term.
    pub(crate) read_round: u64,
    /// The read round of the last heartbeat sent in the replicate state,
    /// and the last index sent before it. A response to that heartbeat
    /// from a follower whose log ends earlier means entries were lost.
    pub(crate) heartbeat_check: Option<(u64, LogIndex)>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            state: ProgressState::Probe,
            match_index: LogIndex(0),
            next_index,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            read_round: 0,
            heartbeat_check: None,
        }
    }

    /// Whether the leader may send an AppendEntries with entries now: in
    /// the replicate state, while fewer than `max_inflight` messages and
    /// `max_bytes` bytes of entries are unacknowledged.
    pub(crate) fn can_send(&self, max_inflight: usize, max_bytes: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < max_inflight && self.inflight_bytes < max_bytes
            }
        }
    }

    /// Records an AppendEntries whose last entry is `last`, carrying
    /// `bytes` of entries.
    pub(crate) fn on_sent(&mut self, last: LogIndex, bytes: usize) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last.next();
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
        }
    }

    /// Records a successful append up to `index`. Returns whether the match
    /// index moved.
    pub(crate) fn on_success(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        if self.state == ProgressState::Probe {
            self.become_replicate();
        }
        self.probe_sent = false;
        moved
    }

    /// Records a rejected append. `hint` is the highest index at which the
    /// follower's log may match. Returns false for a stale rejection, which
    /// changes nothing.
    pub(crate) fn on_reject(&mut self, hint: LogIndex) -> bool {
        if hint < self.match_index {
            return false;
        }
        self.become_probe();
        self.next_index = hint.next().max(self.match_index.next());
        true
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.next_index = self.match_index.next();
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.next_index = self.match_index.next();
    }
}

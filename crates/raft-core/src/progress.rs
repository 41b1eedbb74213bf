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
    /// In the replicate state, the last index of each AppendEntries in
    /// flight, oldest first.
    inflight: VecDeque<LogIndex>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Progress {
        Progress {
            state: ProgressState::Probe,
            match_index: LogIndex(0),
            next_index,
            probe_sent: false,
            inflight: VecDeque::new(),
        }
    }

    /// Whether the leader may send an AppendEntries with entries now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
        }
    }

    /// Records an AppendEntries whose last entry is `last`.
    pub(crate) fn on_sent(&mut self, last: LogIndex) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last.next();
                self.inflight.push_back(last);
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
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
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
        self.next_index = self.match_index.next();
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.inflight.clear();
        self.next_index = self.match_index.next();
    }
}

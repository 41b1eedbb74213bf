//! The in-memory Raft log and its index pointers.
//!
//! The pointers always satisfy
//! `applied <= committed <= stable <= last_index()`:
//!
//! - `stable` is the last index the caller reported durable;
//! - `committed` is the highest index known committed, and never exceeds
//!   `stable`, so this node never applies an entry it could lose at a crash;
//! - `applied` is the last index handed out for applying.
//!
//! `committed` and `applied` never decrease. `stable` decreases only when a
//! conflicting suffix above `committed` is replaced.

use crate::types::{Entry, LogIndex, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// `entries[i]` has index `i + 1`.
    entries: Vec<Entry>,
    stable: LogIndex,
    /// First index not yet handed out for persisting.
    unpersisted: LogIndex,
    committed: LogIndex,
    applied: LogIndex,
}

impl RaftLog {
    /// A log restored from storage, where every entry is already durable.
    pub(crate) fn restore(entries: Vec<Entry>, committed: LogIndex, applied: LogIndex) -> RaftLog {
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index.0,
                position as u64 + 1,
                "restored log entries must be contiguous from index 1"
            );
        }
        let last = LogIndex(entries.len() as u64);
        assert!(
            applied <= committed && committed <= last,
            "restored pointers out of order: applied {applied}, committed {committed}, last {last}"
        );
        RaftLog {
            entries,
            stable: last,
            unpersisted: last.next(),
            committed,
            applied,
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(Term(0), |entry| entry.term)
    }

    pub(crate) fn stable(&self) -> LogIndex {
        self.stable
    }

    pub(crate) fn committed(&self) -> LogIndex {
        self.committed
    }

    pub(crate) fn applied(&self) -> LogIndex {
        self.applied
    }

    /// The term of the entry at `index`: `Term(0)` for index 0, `None` past
    /// the end.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index.0 == 0 {
            return Some(Term(0));
        }
        self.entries
            .get(index.0 as usize - 1)
            .map(|entry| entry.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index.0 == 0 {
            return None;
        }
        self.entries.get(index.0 as usize - 1)
    }

    /// The last index whose entry has `term`, if the log has one.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.iter().rposition(|entry| entry.term <= term)?;
        (self.entries[position].term == term).then_some(LogIndex(position as u64 + 1))
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up
    /// to date as this one: a later last term wins, and for equal terms the
    /// longer log wins.
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends an entry at the end. Its index must be `last_index() + 1`.
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "appended entry must follow the last index"
        );
        self.entries.push(entry);
    }

    /// Merges entries from the leader that follow a matching prefix.
    /// Entries already present with the same term are kept; the first entry
    /// with a different term and everything after it are replaced.
    ///
    /// # Panics
    ///
    /// Panics when the conflict lies at or below the commit index, since a
    /// committed entry can never change.
    pub(crate) fn merge(&mut self, entries: &[Entry]) {
        for (position, entry) in entries.iter().enumerate() {
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(term) => {
                    assert!(
                        entry.index > self.committed,
                        "conflict at committed index {}: local term {term}, leader term {}",
                        entry.index,
                        entry.term
                    );
                    self.truncate_from(entry.index);
                }
                None => {}
            }
            for entry in &entries[position..] {
                self.append(entry.clone());
            }
            return;
        }
    }

    fn truncate_from(&mut self, index: LogIndex) {
        self.entries.truncate(index.0 as usize - 1);
        self.stable = self.stable.min(index.prev());
        self.unpersisted = self.unpersisted.min(index);
    }

    /// Entries in `[from, to]`, at most `max_count` and about `max_bytes`
    /// (always at least one when the range is not empty).
    pub(crate) fn slice(
        &self,
        from: LogIndex,
        to: LogIndex,
        max_count: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = from;
        while index <= to && out.len() < max_count {
            let entry = &self.entries[index.0 as usize - 1];
            bytes += entry.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// Hands out the entries not yet given to the caller for persisting.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.unpersisted.0 as usize - 1;
        let out = self.entries[from..].to_vec();
        self.unpersisted = self.last_index().next();
        out
    }

    pub(crate) fn has_unpersisted(&self) -> bool {
        self.unpersisted <= self.last_index()
    }

    /// Records that the entries up to `index`, whose entry had `term`, are
    /// durable. A report for entries that were replaced since is ignored.
    pub(crate) fn persisted_to(&mut self, index: LogIndex, term: Term) {
        if index > self.stable && index < self.unpersisted && self.matches(index, term) {
            self.stable = index;
        }
    }

    /// Raises the commit index to `index`, capped at the stable index.
    /// Returns whether it moved.
    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.stable);
        if index > self.committed {
            self.committed = index;
            return true;
        }
        false
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.committed > self.applied
    }

    /// Hands out the committed entries not yet applied.
    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let out = self.entries[self.applied.0 as usize..self.committed.0 as usize].to_vec();
        self.applied = self.committed;
        out
    }

    /// Checks the pointer order. Called after every change in debug builds.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.applied <= self.committed
                && self.committed <= self.stable
                && self.stable <= self.last_index(),
            "log pointers out of order: applied {}, committed {}, stable {}, last {}",
            self.applied,
            self.committed,
            self.stable,
            self.last_index()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Vec::new(),
        }
    }

    fn terms(log: &RaftLog) -> Vec<u64> {
        (1..=log.last_index().0)
            .map(|index| log.term(LogIndex(index)).unwrap().0)
            .collect()
    }

    #[test]
    fn merge_keeps_matching_entries() {
        let mut log = RaftLog::restore(vec![entry(1, 1), entry(2, 1)], LogIndex(0), LogIndex(0));
        log.merge(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        assert_eq!(terms(&log), vec![1, 1, 2]);
        assert_eq!(log.stable(), LogIndex(2));
    }

    #[test]
    fn merge_replaces_conflicting_suffix() {
        let mut log = RaftLog::restore(
            vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            LogIndex(1),
            LogIndex(0),
        );
        log.merge(&[entry(2, 2)]);
        assert_eq!(terms(&log), vec![1, 2]);
        assert_eq!(log.stable(), LogIndex(1));
        assert_eq!(log.take_unpersisted(), vec![entry(2, 2)]);
    }

    #[test]
    #[should_panic(expected = "conflict at committed index")]
    fn merge_never_replaces_committed_entry() {
        let mut log = RaftLog::restore(vec![entry(1, 1), entry(2, 1)], LogIndex(2), LogIndex(0));
        log.merge(&[entry(2, 2)]);
    }

    #[test]
    fn commit_capped_at_stable() {
        let mut log = RaftLog::restore(vec![entry(1, 1)], LogIndex(0), LogIndex(0));
        log.append(entry(2, 1));
        assert!(log.commit_to(LogIndex(2)));
        assert_eq!(log.committed(), LogIndex(1));
        log.take_unpersisted();
        log.persisted_to(LogIndex(2), Term(1));
        assert!(log.commit_to(LogIndex(2)));
        assert_eq!(log.committed(), LogIndex(2));
    }

    #[test]
    fn persisted_report_for_replaced_entry_ignored() {
        let mut log = RaftLog::restore(vec![entry(1, 1)], LogIndex(1), LogIndex(0));
        log.append(entry(2, 1));
        log.take_unpersisted();
        log.merge(&[entry(2, 2)]);
        log.persisted_to(LogIndex(2), Term(1));
        assert_eq!(log.stable(), LogIndex(1));
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = RaftLog::restore(vec![entry(1, 1), entry(2, 2)], LogIndex(0), LogIndex(0));
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(1), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(5), Term(1)));
    }
}

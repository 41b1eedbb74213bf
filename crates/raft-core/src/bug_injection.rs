//! Deliberate bugs that the simulator switches on to prove it can catch
//! them. Compiled only with the `bug-injection` feature; without it,
//! [`enabled`] is a constant `false` and the checks vanish from the code.
//!
//! The switch is per thread, because the simulator runs each seed on one
//! thread and tests run on several.

use std::cell::Cell;

/// A bug that can be switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// A leader commits an entry of an earlier term by counting replicas.
    CommitPreviousTerm,
    /// A node grants its vote without checking that the candidate's log is
    /// at least as up to date as its own.
    VoteWithoutLogCheck,
    /// A node sends its messages, acknowledgments included, before the
    /// entries they acknowledge are fsynced.
    AckBeforeFsync,
    /// A restarted node applies its committed entries a second time.
    DoubleApply,
    /// A leader answers a ReadIndex read without the heartbeat round that
    /// confirms it still leads.
    ReadWithoutRound,
    /// A leader takes a rejecting follower's backtracking hint for a match
    /// instead of probing it.
    BacktrackPastConflict,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::CommitPreviousTerm,
        Bug::VoteWithoutLogCheck,
        Bug::AckBeforeFsync,
        Bug::DoubleApply,
        Bug::ReadWithoutRound,
        Bug::BacktrackPastConflict,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitPreviousTerm => "commit-previous-term",
            Bug::VoteWithoutLogCheck => "vote-without-log-check",
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::DoubleApply => "double-apply",
            Bug::ReadWithoutRound => "read-without-round",
            Bug::BacktrackPastConflict => "backtrack-past-conflict",
        }
    }

    /// Looks a bug up by its command-line name.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

thread_local! {
    static ENABLED: Cell<u32> = const { Cell::new(0) };
}

/// Switches `bug` on or off for the current thread.
pub fn set(bug: Bug, on: bool) {
    ENABLED.with(|enabled| {
        let bits = enabled.get();
        enabled.set(if on {
            bits | bug.bit()
        } else {
            bits & !bug.bit()
        });
    });
}

/// Switches every bug off for the current thread.
pub fn clear() {
    ENABLED.with(|enabled| enabled.set(0));
}

/// Whether `bug` is switched on for the current thread.
pub fn enabled(bug: Bug) -> bool {
    ENABLED.with(|enabled| enabled.get() & bug.bit() != 0)
}

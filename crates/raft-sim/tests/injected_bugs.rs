//! Each deliberate bug must be caught by the simulator within 2,000 seeds.
//! Run with `cargo test --release -p raft-sim --features bug-injection`.

#![cfg(feature = "bug-injection")]

use raft_core::bug_injection::Bug;
use raft_sim::sim::{SimOptions, run_seed};

const MAX_SEEDS: u64 = 2000;

/// Returns the first seed that fails with `bug` switched on, and its
/// failure.
fn first_failing_seed(bug: Bug, nodes: u64) -> Option<(u64, String)> {
    for seed in 0..MAX_SEEDS {
        let mut options = SimOptions::new(seed, nodes);
        options.bug = Some(bug.name().to_owned());
        let report = run_seed(&options);
        if let Err(failure) = report.result {
            return Some((seed, failure.to_string()));
        }
    }
    None
}

fn assert_caught(bug: Bug) {
    let caught = first_failing_seed(bug, 3);
    let (seed, failure) =
        caught.unwrap_or_else(|| panic!("{} was not caught within {MAX_SEEDS} seeds", bug.name()));
    eprintln!("{} caught at seed {seed}: {failure}", bug.name());
}

#[test]
fn commit_previous_term_caught() {
    assert_caught(Bug::CommitPreviousTerm);
}

#[test]
fn vote_without_log_check_caught() {
    assert_caught(Bug::VoteWithoutLogCheck);
}

#[test]
fn ack_before_fsync_caught() {
    assert_caught(Bug::AckBeforeFsync);
}

#[test]
fn double_apply_caught() {
    assert_caught(Bug::DoubleApply);
}

#[test]
fn read_without_round_caught() {
    assert_caught(Bug::ReadWithoutRound);
}

#[test]
fn backtrack_past_conflict_caught() {
    assert_caught(Bug::BacktrackPastConflict);
}

//! Linearizability checking of key-value histories.
//!
//! # Model
//!
//! Each key is an independent register that contains a JSON value or is absent,
//! and every key starts absent. On a key:
//!
//! - `write v` sets the value to `v`.
//! - `delete` makes the key absent.
//! - `cas [expected, new]` sets the value to `new` if the current value equals
//!   `expected`, where a `null` expected value means "absent". A `cas` that
//!   completes `ok` succeeded, and one that completes `fail` did not happen.
//! - `read` returns the current value, `null` meaning absent.
//!
//! Values are compared as JSON values, so `1` and `1.0` differ, and so do
//! `"1"` and `1`.
//!
//! An `ok` operation took effect exactly once between its invocation and its
//! completion. A `fail` operation is dropped. An `info` operation, or one
//! without a completion, may take effect at any time after its invocation or
//! never, so it is never required. An `info` read constrains nothing and is
//! dropped, and an `info` cas takes effect only if its expected value is
//! current at the point where it is placed.
//!
//! # Algorithm
//!
//! Linearizability is compositional over independent objects, so the history
//! is split by key and each key is checked on its own, in sorted key order.
//! Each key is checked with the algorithm of Wing and Gong ("Testing and
//! verifying concurrent objects", 1993), in the form given by Lowe ("Testing
//! for linearizability", 2017): a depth-first search that repeatedly picks an
//! operation which may come first among the remaining ones, applies it to the
//! model, and backtracks when no remaining operation can come next. A cache of
//! visited (set of linearized operations, register value) pairs prunes
//! configurations that were already explored.
//!
//! Two refinements keep indeterminate operations cheap. An `info` operation
//! whose written value no read or cas ever expects cannot change what any
//! other operation observes, so it is dropped before the search. The search
//! tries the remaining `info` operations only after all `ok` ones that may
//! come next.
//!
//! The search is exponential in the worst case, so each key has a step budget
//! ([`CheckOptions::max_steps_per_key`]). When a key exceeds it, the result
//! is [`CheckResult::Unknown`], never [`CheckResult::Linearizable`].

mod search;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::history::{self, Event, Function, HistoryError, Operation, Outcome};

/// The default for [`CheckOptions::max_steps_per_key`].
///
/// NOTE: on generated histories a release build ran about 5 to 10 million
/// steps per second. Linearizable keys with up to 16 concurrent processes
/// needed far fewer steps, but non-linearizable keys with about 30
/// overlapping operations, a fifth of them `info`, often exceeded this
/// budget and came out `Unknown`.
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 5_000_000;

/// Settings of the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The maximum number of search steps for one key. A step tries one
    /// operation as the next one or undoes one. The search also caches up to
    /// one configuration per step, which takes tens of bytes per step for keys
    /// with a few hundred operations.
    pub max_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            max_steps_per_key: DEFAULT_MAX_STEPS_PER_KEY,
        }
    }
}

/// The verdict on a history.
#[derive(Debug)]
pub enum CheckResult {
    /// Every key has a linearization.
    Linearizable,
    /// A key has no linearization. It is the first such key in sorted order.
    NotLinearizable(Counterexample),
    /// No key was found to be non-linearizable, but this key, the first such
    /// one in sorted order, could not be decided.
    Unknown {
        /// The undecided key.
        key: String,
        /// The reason the key was not decided.
        reason: UnknownReason,
    },
}

impl CheckResult {
    /// Returns true if the history was proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// The reason the checker could not decide a key.
#[derive(Debug)]
pub enum UnknownReason {
    /// The history breaks the pairing rules or has a value of the wrong
    /// shape. [`history::parse_jsonl`] rejects such histories, so only
    /// events built by hand reach this.
    InvalidHistory(HistoryError),
    /// The search of the key took more than `max_steps` steps.
    StepBudgetExceeded {
        /// The budget that was exceeded.
        max_steps: u64,
    },
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownReason::StepBudgetExceeded { max_steps } => write!(
                f,
                "the search exceeded its budget of {max_steps} steps; \
                 raise CheckOptions::max_steps_per_key or shorten the history"
            ),
            UnknownReason::InvalidHistory(error) => write!(f, "invalid history: {error}"),
        }
    }
}

/// A key whose operations have no linearization, with the evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Counterexample {
    /// The key.
    pub key: String,
    /// All operations on the key, in invocation order, including those that
    /// the checker dropped (`fail` operations and `info` reads).
    pub operations: Vec<Operation>,
    /// The longest sequence of operations that the search could linearize, as
    /// indexes into `operations`. No remaining operation fits after it, which
    /// usually points near the anomaly.
    pub longest_prefix: Vec<usize>,
    /// The register value after `longest_prefix`, `None` meaning absent.
    pub prefix_state: Option<Value>,
}

/// Checks a history against the key-value model with the default options.
///
/// A history that breaks the rules of [`history::operations`] gives
/// [`CheckResult::Unknown`] with [`UnknownReason::InvalidHistory`].
pub fn check(events: &[Event]) -> CheckResult {
    check_with(events, &CheckOptions::default())
}

/// Checks a history against the key-value model.
///
/// Keys are checked in sorted order. The result names the first
/// non-linearizable key if there is one, and otherwise the first undecided
/// key if there is one. A history that breaks the rules of
/// [`history::operations`] gives [`CheckResult::Unknown`] with
/// [`UnknownReason::InvalidHistory`] and the key of the invalid event.
pub fn check_with(events: &[Event], options: &CheckOptions) -> CheckResult {
    let operations = match history::operations(events) {
        Ok(operations) => operations,
        Err(error) => return invalid_history(events, error),
    };
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in &operations {
        by_key
            .entry(operation.key.as_str())
            .or_default()
            .push(operation);
    }

    let mut first_unknown = None;
    for (key, key_operations) in by_key {
        match search::check_key(&key_operations, options.max_steps_per_key) {
            search::KeyVerdict::Linearizable => {}
            search::KeyVerdict::NotLinearizable {
                longest_prefix,
                prefix_state,
            } => {
                return CheckResult::NotLinearizable(Counterexample {
                    key: key.to_owned(),
                    operations: key_operations.into_iter().cloned().collect(),
                    longest_prefix,
                    prefix_state,
                });
            }
            search::KeyVerdict::Unknown(reason) => {
                first_unknown.get_or_insert(CheckResult::Unknown {
                    key: key.to_owned(),
                    reason,
                });
            }
        }
    }
    first_unknown.unwrap_or(CheckResult::Linearizable)
}

fn invalid_history(events: &[Event], error: HistoryError) -> CheckResult {
    let line = match &error {
        HistoryError::Json { line, .. }
        | HistoryError::InvalidValue { line, .. }
        | HistoryError::AlreadyOutstanding { line, .. }
        | HistoryError::NotOutstanding { line, .. }
        | HistoryError::MismatchedCompletion { line, .. } => *line,
    };
    let key = line
        .checked_sub(1)
        .and_then(|index| events.get(index))
        .map(|event| event.key.clone())
        .unwrap_or_default();
    CheckResult::Unknown {
        key,
        reason: UnknownReason::InvalidHistory(error),
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("the history is linearizable"),
            CheckResult::NotLinearizable(counterexample) => counterexample.fmt(f),
            CheckResult::Unknown { key, reason } => {
                write!(f, "linearizability of key {key:?} is unknown: {reason}")
            }
        }
    }
}

impl fmt::Display for Counterexample {
    /// Prints the key, then one line per operation in invocation order, then
    /// the longest linearizable prefix that the search found.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?} is not linearizable; its {} operations in invocation order \
             (event positions are 0-based):",
            self.key,
            self.operations.len()
        )?;
        for (index, operation) in self.operations.iter().enumerate() {
            writeln!(f, "  op {index}: {}", OperationLine(operation))?;
        }
        if self.longest_prefix.is_empty() {
            write!(f, "no operation can be linearized first")?;
        } else {
            let prefix: Vec<String> = self
                .longest_prefix
                .iter()
                .map(|index| format!("op {index}"))
                .collect();
            write!(
                f,
                "longest linearizable prefix: {}; the key's value is then {}, \
                 and no remaining operation can come next",
                prefix.join(", "),
                ValueText(self.prefix_state.as_ref())
            )?;
        }
        Ok(())
    }
}

/// An operation formatted for one line of a counterexample, for example
/// `events 3..7, process 1: cas "a" to "b" => ok`.
struct OperationLine<'a>(&'a Operation);

impl fmt::Display for OperationLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operation = self.0;
        match operation.complete_index {
            Some(complete) => write!(f, "events {}..{}", operation.invoke_index, complete)?,
            None => write!(f, "events {}..(none)", operation.invoke_index)?,
        }
        write!(f, ", process {}: ", operation.process)?;
        match operation.f {
            Function::Read => f.write_str("read")?,
            Function::Delete => f.write_str("delete")?,
            Function::Write => write!(f, "write {}", ValueText(operation.value.as_ref()))?,
            Function::Cas => match operation.value.as_ref().and_then(Value::as_array) {
                Some(pair) if pair.len() == 2 => write!(
                    f,
                    "cas {} to {}",
                    ValueText(Some(&pair[0])),
                    ValueText(Some(&pair[1]))
                )?,
                _ => write!(f, "cas {}", ValueText(operation.value.as_ref()))?,
            },
        }
        write!(f, " => {}", operation.outcome)?;
        if operation.f == Function::Read && operation.outcome == Outcome::Ok {
            write!(f, " {}", ValueText(operation.result.as_ref()))?;
        }
        if operation.complete_index.is_none() {
            f.write_str(" (no completion)")?;
        }
        Ok(())
    }
}

/// A register value formatted as compact JSON, or `absent` for `None` and
/// JSON `null`.
struct ValueText<'a>(Option<&'a Value>);

impl fmt::Display for ValueText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None | Some(Value::Null) => f.write_str("absent"),
            Some(value) => write!(f, "{value}"),
        }
    }
}

//! Operation histories of the key-value store, in Jepsen's event format.
//!
//! A history is a list of events in real-time order: each client operation
//! appears as an `invoke` event when the client sends it and, usually, a later
//! completion event (`ok`, `fail` or `info`) from the same process. Events of
//! different processes interleave freely.
//!
//! # Format
//!
//! On disk a history is JSON lines, one event object per line:
//!
//! ```text
//! {"process":1,"type":"invoke","f":"write","key":"x","value":"a"}
//! {"process":2,"type":"invoke","f":"read","key":"x","value":null}
//! {"process":1,"type":"ok","f":"write","key":"x","value":"a"}
//! {"process":2,"type":"ok","f":"read","key":"x","value":"a"}
//! {"process":1,"type":"invoke","f":"cas","key":"x","value":["a","b"]}
//! {"process":1,"type":"fail","f":"cas","key":"x","value":["a","b"]}
//! ```
//!
//! - `process`: the client id, a non-negative integer.
//! - `type`: `invoke`, `ok`, `fail` or `info`.
//! - `f`: `read`, `write`, `cas` or `delete`.
//! - `key`: a string.
//! - `value`: for a `write` invocation, the value written, which is any JSON
//!   value except `null`. For a `cas` invocation, `[expected, new]`, where
//!   `expected` is `null` when the operation expects the key to be absent and
//!   `new` is not `null`. For an `ok` read, the value read, or `null` when the
//!   key was absent. Everywhere else `value` may be absent or `null`, and the
//!   value of a completion other than an `ok` read is ignored.
//!
//! A `null` written value is rejected because a read reports an absent key as
//! `null`, so such a write could not be distinguished from a delete. Other fields,
//! such as Jepsen's `time` and `index`, are ignored when parsing. Blank lines
//! are skipped.
//!
//! # Completions
//!
//! - `ok`: the operation took effect exactly once between its invocation and
//!   its completion.
//! - `fail`: the operation did not take effect.
//! - `info`: the operation may or may not have taken effect, at any time after
//!   its invocation, even after the `info` event.
//!
//! An invocation that has no completion by the end of the history counts as
//! `info`.
//!
//! # Validation
//!
//! A process has at most one outstanding invocation, and a completion must
//! match its process's outstanding invocation in `f` and `key`. After any
//! completion, including `info`, the process may invoke again. [`parse_jsonl`],
//! [`operations`] and the [`History`] recorder all enforce these rules and the
//! value shapes above.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of an event: an invocation or one of the three completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the operation.
    Invoke,
    /// The operation took effect exactly once.
    Ok,
    /// The operation did not take effect.
    Fail,
    /// The operation may or may not have taken effect.
    Info,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        };
        f.write_str(name)
    }
}

/// The outcome of a completed operation, which is the type of its completion
/// event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation took effect exactly once.
    Ok,
    /// The operation did not take effect.
    Fail,
    /// The operation may or may not have taken effect.
    Info,
}

impl Outcome {
    /// Returns the event type of a completion with this outcome.
    pub fn event_type(self) -> EventType {
        match self {
            Outcome::Ok => EventType::Ok,
            Outcome::Fail => EventType::Fail,
            Outcome::Info => EventType::Info,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.event_type().fmt(f)
    }
}

/// The operation of an event, Jepsen's `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Reads the value of a key.
    Read,
    /// Sets the value of a key.
    Write,
    /// Compare-and-set: sets a new value if the current one is the expected one.
    Cas,
    /// Removes a key.
    Delete,
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Delete => "delete",
        };
        f.write_str(name)
    }
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The client that invoked or completed the operation.
    pub process: u64,
    /// The event type, the JSON field `type`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub f: Function,
    /// The key that the operation reads or changes.
    pub key: String,
    /// The operation's value, `None` for JSON `null` or a missing field. The
    /// module documentation lists what it means for each operation.
    #[serde(default)]
    pub value: Option<Value>,
}

/// One operation of a history: an invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// The client that invoked the operation.
    pub process: u64,
    /// The operation.
    pub f: Function,
    /// The key that the operation reads or changes.
    pub key: String,
    /// The value of the invocation event: the written value, `[expected, new]`
    /// for a `cas`, or `None`.
    pub value: Option<Value>,
    /// The outcome: `Info` when the operation has no completion.
    pub outcome: Outcome,
    /// The value of the completion event: for an `ok` read, the value read,
    /// with `None` meaning the key was absent.
    pub result: Option<Value>,
    /// The 0-based position of the invocation event in the history.
    pub invoke_index: usize,
    /// The 0-based position of the completion event in the history, or `None`
    /// when the operation never completed.
    pub complete_index: Option<usize>,
}

/// An error in a history: an event that cannot be parsed or that breaks the
/// pairing rules. `line` is the 1-based line in the JSON-lines text, which
/// for a list of events is the event's position plus one.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The line is not a valid event object.
    #[error("line {line}: invalid event: {source}")]
    Json {
        /// The line of the event.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The `value` field has the wrong shape for the event's `f` and `type`.
    #[error("line {line}: invalid value for a {f} {kind} event: expected {expected}")]
    InvalidValue {
        /// The line of the event.
        line: usize,
        /// The operation of the event.
        f: Function,
        /// The type of the event.
        kind: EventType,
        /// A description of the valid values.
        expected: &'static str,
    },
    /// A process invoked an operation while another one was outstanding.
    #[error(
        "line {line}: process {process} invoked {f} on key {key:?} while its \
         invocation on line {pending_line} has not completed"
    )]
    AlreadyOutstanding {
        /// The line of the second invocation.
        line: usize,
        /// The process.
        process: u64,
        /// The operation of the second invocation.
        f: Function,
        /// The key of the second invocation.
        key: String,
        /// The line of the outstanding invocation.
        pending_line: usize,
    },
    /// A completion event from a process with no outstanding invocation.
    #[error(
        "line {line}: process {process} completed an operation but has no outstanding invocation"
    )]
    NotOutstanding {
        /// The line of the completion.
        line: usize,
        /// The process.
        process: u64,
    },
    /// A completion event whose `f` or `key` differs from the invocation's.
    #[error(
        "line {line}: process {process} completed {f} on key {key:?}, but its \
         invocation on line {invoke_line} is {invoked_f} on key {invoked_key:?}"
    )]
    MismatchedCompletion {
        /// The line of the completion.
        line: usize,
        /// The process.
        process: u64,
        /// The operation of the completion.
        f: Function,
        /// The key of the completion.
        key: String,
        /// The line of the outstanding invocation.
        invoke_line: usize,
        /// The operation of the outstanding invocation.
        invoked_f: Function,
        /// The key of the outstanding invocation.
        invoked_key: String,
    },
}

/// Parses a JSON-lines history, skipping blank lines, and validates it as
/// described in the module documentation.
///
/// # Errors
///
/// Returns the first line that is not a valid event, has a value of the wrong
/// shape, or breaks the pairing of invocations and completions.
pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, HistoryError> {
    let mut pairing = Pairing::default();
    let mut events = Vec::new();
    for (line_index, line_text) in text.lines().enumerate() {
        let line = line_index + 1;
        if line_text.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(line_text)
            .map_err(|source| HistoryError::Json { line, source })?;
        pairing.push(events.len(), line, &event)?;
        events.push(event);
    }
    Ok(events)
}

/// Writes events as JSON lines, one compact object per line, in the format
/// that [`parse_jsonl`] reads.
///
/// # Errors
///
/// Returns the first error of `out`.
pub fn write_jsonl<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    mut out: impl Write,
) -> io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Pairs each invocation with its completion and returns the operations in
/// invocation order. An invocation without a completion gets the `Info`
/// outcome.
///
/// # Errors
///
/// Returns the first event that has a value of the wrong shape or breaks the
/// pairing rules, with `line` set to its position plus one.
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    let mut pairing = Pairing::default();
    for (index, event) in events.iter().enumerate() {
        pairing.push(index, index + 1, event)?;
    }
    Ok(pairing.operations)
}

/// A recorder that builds a valid history event by event, for the simulator.
///
/// Each method validates the new event as [`parse_jsonl`] would and leaves the
/// history unchanged when it returns an error.
#[derive(Clone, Debug, Default)]
pub struct History {
    events: Vec<Event>,
    pairing: Pairing,
}

impl History {
    /// Creates an empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `process` invoked `f` on `key` with the given value, which
    /// follows the rules of the module documentation.
    ///
    /// # Errors
    ///
    /// Returns [`HistoryError::AlreadyOutstanding`] if the process has an
    /// outstanding invocation, or [`HistoryError::InvalidValue`] if the value
    /// has the wrong shape for `f`.
    pub fn invoke(
        &mut self,
        process: u64,
        f: Function,
        key: impl Into<String>,
        value: Option<Value>,
    ) -> Result<(), HistoryError> {
        let event = Event {
            process,
            kind: EventType::Invoke,
            f,
            key: key.into(),
            value,
        };
        self.push(event)
    }

    /// Records that the outstanding invocation of `process` completed with
    /// `outcome`. `value` is the value read for an `ok` read, with `None`
    /// meaning the key was absent, and is otherwise stored as given.
    ///
    /// # Errors
    ///
    /// Returns [`HistoryError::NotOutstanding`] if the process has no
    /// outstanding invocation.
    pub fn complete(
        &mut self,
        process: u64,
        outcome: Outcome,
        value: Option<Value>,
    ) -> Result<(), HistoryError> {
        let Some(invocation) = self.pairing.outstanding_operation(process) else {
            return Err(HistoryError::NotOutstanding {
                line: self.events.len() + 1,
                process,
            });
        };
        let event = Event {
            process,
            kind: outcome.event_type(),
            f: invocation.f,
            key: invocation.key.clone(),
            value,
        };
        self.push(event)
    }

    /// Returns the events recorded so far, in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Returns the operations recorded so far, in invocation order, with
    /// outstanding ones as `Info`.
    pub fn operations(&self) -> &[Operation] {
        &self.pairing.operations
    }

    /// Consumes the recorder and returns its events.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    fn push(&mut self, event: Event) -> Result<(), HistoryError> {
        let index = self.events.len();
        self.pairing.push(index, index + 1, &event)?;
        self.events.push(event);
        Ok(())
    }
}

/// The validation state shared by the parser, [`operations`] and [`History`].
#[derive(Clone, Debug, Default)]
struct Pairing {
    operations: Vec<Operation>,
    /// For each process with an outstanding invocation: the index of its
    /// operation in `operations` and the line of the invocation.
    outstanding: HashMap<u64, (usize, usize)>,
}

impl Pairing {
    fn outstanding_operation(&self, process: u64) -> Option<&Operation> {
        let &(operation, _) = self.outstanding.get(&process)?;
        Some(&self.operations[operation])
    }

    /// Validates the event at position `index` and on line `line` and records
    /// it. On error nothing changes.
    fn push(&mut self, index: usize, line: usize, event: &Event) -> Result<(), HistoryError> {
        if let Some(expected) = invalid_value(event) {
            return Err(HistoryError::InvalidValue {
                line,
                f: event.f,
                kind: event.kind,
                expected,
            });
        }
        let outcome = match event.kind {
            EventType::Invoke => return self.push_invocation(index, line, event),
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            EventType::Info => Outcome::Info,
        };
        let Some(&(operation_index, invoke_line)) = self.outstanding.get(&event.process) else {
            return Err(HistoryError::NotOutstanding {
                line,
                process: event.process,
            });
        };
        let operation = &mut self.operations[operation_index];
        if operation.f != event.f || operation.key != event.key {
            return Err(HistoryError::MismatchedCompletion {
                line,
                process: event.process,
                f: event.f,
                key: event.key.clone(),
                invoke_line,
                invoked_f: operation.f,
                invoked_key: operation.key.clone(),
            });
        }
        operation.outcome = outcome;
        operation.result = event.value.clone();
        operation.complete_index = Some(index);
        self.outstanding.remove(&event.process);
        Ok(())
    }

    fn push_invocation(
        &mut self,
        index: usize,
        line: usize,
        event: &Event,
    ) -> Result<(), HistoryError> {
        if let Some(&(_, pending_line)) = self.outstanding.get(&event.process) {
            return Err(HistoryError::AlreadyOutstanding {
                line,
                process: event.process,
                f: event.f,
                key: event.key.clone(),
                pending_line,
            });
        }
        self.outstanding
            .insert(event.process, (self.operations.len(), line));
        self.operations.push(Operation {
            process: event.process,
            f: event.f,
            key: event.key.clone(),
            value: event.value.clone(),
            outcome: Outcome::Info,
            result: None,
            invoke_index: index,
            complete_index: None,
        });
        Ok(())
    }
}

/// Returns a description of the valid values if the event's value has the
/// wrong shape, or `None` if it is valid.
fn invalid_value(event: &Event) -> Option<&'static str> {
    if event.kind != EventType::Invoke {
        // Only an `ok` read's value matters, and any JSON value is valid there.
        return None;
    }
    match (event.f, &event.value) {
        (Function::Read | Function::Delete, None) => None,
        (Function::Read | Function::Delete, Some(_)) => Some("no value or null"),
        (Function::Write, Some(_)) => None,
        (Function::Write, None) => {
            Some("the value written, which must not be null because null means an absent key")
        }
        (Function::Cas, Some(Value::Array(pair))) if pair.len() == 2 && !pair[1].is_null() => None,
        (Function::Cas, _) => Some("[expected, new] with a new value that is not null"),
    }
}

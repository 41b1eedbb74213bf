//! The search for a linearization of one key's operations.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;

use super::UnknownReason;
use crate::history::{Function, Operation, Outcome};

/// The outcome of checking one key.
pub(super) enum KeyVerdict {
    Linearizable,
    NotLinearizable {
        /// Indexes into the key's operations.
        longest_prefix: Vec<usize>,
        prefix_state: Option<Value>,
    },
    Unknown(UnknownReason),
}

/// Checks the operations of one key, given in invocation order, within a
/// budget of `max_steps` search steps.
pub(super) fn check_key(operations: &[&Operation], max_steps: u64) -> KeyVerdict {
    let mut values = ValueIds::default();
    let candidates = build_candidates(operations, &mut values);
    let mut search = Search::new(&candidates, values.values.len() + 1);
    match search.run(max_steps) {
        Some(true) => KeyVerdict::Linearizable,
        None => KeyVerdict::Unknown(UnknownReason::StepBudgetExceeded { max_steps }),
        Some(false) => KeyVerdict::NotLinearizable {
            longest_prefix: search
                .longest_prefix
                .iter()
                .map(|&candidate| candidates[candidate].source)
                .collect(),
            prefix_state: values.value(search.longest_prefix_state),
        },
    }
}

/// The id of a register value: [`ABSENT`] or an index into [`ValueIds`].
type ValueId = u32;

/// The id of the absent register value.
const ABSENT: ValueId = 0;

/// Interns JSON values as small integers, so that the register value is cheap
/// to compare, hash and store in the cache.
#[derive(Default)]
struct ValueIds {
    /// Canonical JSON text of each value to its id.
    ids: HashMap<String, ValueId>,
    /// The value of each id minus one.
    values: Vec<Value>,
}

impl ValueIds {
    /// Returns the id of a value, treating `None` and JSON `null` as absent.
    fn id(&mut self, value: Option<&Value>) -> ValueId {
        let value = match value {
            None | Some(Value::Null) => return ABSENT,
            Some(value) => value,
        };
        let mut text = String::new();
        write_canonical_json(value, &mut text);
        let next_id = ValueId::try_from(self.values.len() + 1)
            .expect("a key has fewer than 2^32 distinct values");
        *self.ids.entry(text).or_insert_with(|| {
            self.values.push(value.clone());
            next_id
        })
    }

    fn value(&self, id: ValueId) -> Option<Value> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.values.get(index).cloned()
    }
}

/// Appends JSON text for `value` with object keys sorted, so that values that
/// compare equal get the same text whatever the key order of their objects.
fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The effect of an operation on the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read(ValueId),
    Write(ValueId),
    Delete,
    Cas { expected: ValueId, new: ValueId },
}

impl Action {
    /// Returns the register value after the action, or `None` if the action
    /// cannot take effect on `state`.
    fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Action::Read(value) => (value == state).then_some(state),
            Action::Write(value) => Some(value),
            Action::Delete => Some(ABSENT),
            Action::Cas { expected, new } => (expected == state).then_some(new),
        }
    }

    /// Returns the register value that the action needs to take effect.
    fn observed(self) -> Option<ValueId> {
        match self {
            Action::Read(value) => Some(value),
            Action::Cas { expected, .. } => Some(expected),
            Action::Write(_) | Action::Delete => None,
        }
    }

    /// Returns the register value that the action leaves, if it changes it.
    fn written(self) -> Option<ValueId> {
        match self {
            Action::Read(_) => None,
            Action::Write(value) => Some(value),
            Action::Delete => Some(ABSENT),
            Action::Cas { new, .. } => Some(new),
        }
    }
}

/// An operation that the search may linearize.
#[derive(Clone, Debug)]
struct Candidate {
    /// The index of the operation in the key's operations.
    source: usize,
    action: Action,
    /// True for an `ok` operation, which every linearization must contain.
    required: bool,
    /// The position of the invocation event.
    invoke: usize,
    /// The position of the completion event, for a required candidate.
    complete: usize,
}

/// Turns the key's operations into search candidates: required (`ok`)
/// candidates first, then optional (`info`) ones, each group in invocation
/// order. Drops `fail` operations, `info` reads, and `info` operations whose
/// written value nothing observes.
fn build_candidates(operations: &[&Operation], values: &mut ValueIds) -> Vec<Candidate> {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    for (source, operation) in operations.iter().enumerate() {
        let action = match (operation.f, operation.outcome) {
            (_, Outcome::Fail) | (Function::Read, Outcome::Info) => continue,
            (Function::Read, Outcome::Ok) => Action::Read(values.id(operation.result.as_ref())),
            (Function::Write, _) => Action::Write(values.id(operation.value.as_ref())),
            (Function::Delete, _) => Action::Delete,
            (Function::Cas, _) => {
                let pair = operation.value.as_ref().and_then(Value::as_array);
                let expected = pair.and_then(|pair| pair.first());
                let new = pair.and_then(|pair| pair.get(1));
                Action::Cas {
                    expected: values.id(expected),
                    new: values.id(new),
                }
            }
        };
        let candidate = Candidate {
            source,
            action,
            required: operation.outcome == Outcome::Ok,
            invoke: operation.invoke_index,
            complete: operation.complete_index.unwrap_or(usize::MAX),
        };
        if candidate.required {
            required.push(candidate);
        } else {
            optional.push(candidate);
        }
    }
    drop_unobserved(&required, &mut optional, values.values.len() + 1);
    required.extend(optional);
    required
}

/// Removes optional candidates whose written value no remaining candidate
/// observes, until none is left to remove. Such an operation can be left out
/// of any linearization that contains it. The operations after it, up to the
/// next write or delete, neither read its value nor expect it in a cas, so
/// they see the same register value without it.
fn drop_unobserved(required: &[Candidate], optional: &mut Vec<Candidate>, value_count: usize) {
    loop {
        let mut observed = vec![false; value_count];
        for candidate in required.iter().chain(optional.iter()) {
            if let Some(value) = candidate.action.observed() {
                observed[value as usize] = true;
            }
        }
        let before = optional.len();
        optional.retain(|candidate| {
            candidate
                .action
                .written()
                .is_some_and(|value| observed[value as usize])
        });
        if optional.len() == before {
            return;
        }
    }
}

/// A circular doubly linked list over nodes `1..=len` with sentinel node 0,
/// whose removals can be undone in reverse order.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    fn new(len: usize) -> Self {
        let next = (0..=len).map(|node| (node + 1) % (len + 1)).collect();
        let prev = (0..=len).map(|node| (node + len) % (len + 1)).collect();
        Self { next, prev }
    }

    /// Unlinks `node`, keeping its own links so that [`Links::restore`] can
    /// put it back.
    fn remove(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Relinks `node`. Valid only if the nodes removed after it have been
    /// restored.
    fn restore(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }
}

/// An invocation or completion of a required candidate in the event list.
#[derive(Clone, Copy)]
struct Entry {
    candidate: usize,
    is_call: bool,
    /// The position of the event in the history.
    position: usize,
}

/// The nodes of a candidate in the list that contains it.
#[derive(Clone, Copy, Default)]
struct Nodes {
    /// The node of the invocation, in the event list for a required
    /// candidate and in the optional list for an optional one.
    call: usize,
    /// The node of the completion in the event list, for a required candidate.
    ret: usize,
}

/// Where the search looks for the next candidate to linearize.
#[derive(Clone, Copy)]
enum Cursor {
    /// At a configuration reached for the first time, which first looks for a
    /// read to linearize without branching.
    Start,
    /// At a node of the event list. Required candidates whose invocation
    /// comes before the first remaining completion may come next.
    Event(usize),
    /// At a node of the optional list. Optional candidates invoked before
    /// position `limit`, the first remaining completion, may come next.
    Optional { node: usize, limit: usize },
    /// No candidate may come next, so the last choice is undone.
    Backtrack,
}

/// A linearized candidate on the search stack.
struct Frame {
    candidate: usize,
    /// The register value before the candidate took effect.
    prev_state: ValueId,
    /// The `limit` of the cursor that chose an optional candidate.
    limit: usize,
    /// True for a read linearized without trying the alternatives, so that
    /// its failure also fails the configuration before it.
    forced: bool,
}

/// A configuration in the cache: the register value and the set of
/// linearized candidates, stored as the count of leading bitset words that
/// are all ones followed by the rest of the words up to the last nonzero one.
/// Linearization proceeds roughly in invocation order, so this stays short.
#[derive(PartialEq, Eq, Hash)]
struct CacheKey {
    state: ValueId,
    full_words: u32,
    rest: Box<[u64]>,
}

impl CacheKey {
    fn new(state: ValueId, bits: &[u64]) -> Self {
        let full_words = bits.iter().take_while(|&&word| word == u64::MAX).count();
        let end = bits
            .iter()
            .rposition(|&word| word != 0)
            .map_or(full_words, |last| (last + 1).max(full_words));
        Self {
            state,
            full_words: u32::try_from(full_words).expect("fewer than 2^32 bitset words"),
            rest: bits[full_words..end].into(),
        }
    }
}

/// The FNV-1a hash, which is much faster than the default SipHash for the
/// short integer keys of the cache. The keys come from the history, not from
/// an adversary, so hash flooding is no concern.
#[derive(Clone, Copy)]
struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        // One multiply per word, then a xor-shift so that high bits reach the
        // low bits that the hash table uses.
        self.0 = (self.0 ^ value).wrapping_mul(0x0100_0000_01b3);
        self.0 ^= self.0 >> 29;
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// The depth-first search over linearizations of one key.
struct Search<'a> {
    candidates: &'a [Candidate],
    /// Invocations and completions of the unlinearized required candidates,
    /// in history order. Node `i` is `entries[i - 1]`.
    events: Links,
    entries: Vec<Entry>,
    /// The unlinearized optional candidates in invocation order. Node `i`
    /// is candidate `optional_start + i - 1`.
    optional: Links,
    optional_start: usize,
    nodes: Vec<Nodes>,
    /// The linearized candidates as a bitset indexed by candidate.
    linearized: Vec<u64>,
    /// For each value id: how many unlinearized candidates observe it.
    observers_left: Vec<u32>,
    /// For each value id: the optional candidates that write it.
    optional_writers: Vec<Vec<usize>>,
    /// The linearized candidates plus the useless optional ones, which write
    /// a value that no unlinearized candidate observes. A useless candidate
    /// can be dropped from any linearization (see [`drop_unobserved`]), so
    /// configurations that differ only in useless candidates have the same
    /// outcome, and the cache stores this set.
    canonical: Vec<u64>,
    state: ValueId,
    required_left: usize,
    stack: Vec<Frame>,
    cache: HashSet<CacheKey, BuildHasherDefault<FnvHasher>>,
    longest_prefix: Vec<usize>,
    longest_prefix_state: ValueId,
}

impl<'a> Search<'a> {
    fn new(candidates: &'a [Candidate], value_count: usize) -> Self {
        let optional_start = candidates
            .iter()
            .position(|candidate| !candidate.required)
            .unwrap_or(candidates.len());
        let mut entries = Vec::with_capacity(2 * optional_start);
        for (index, candidate) in candidates[..optional_start].iter().enumerate() {
            entries.push(Entry {
                candidate: index,
                is_call: true,
                position: candidate.invoke,
            });
            entries.push(Entry {
                candidate: index,
                is_call: false,
                position: candidate.complete,
            });
        }
        entries.sort_by_key(|entry| entry.position);

        let mut nodes = vec![Nodes::default(); candidates.len()];
        for (index, entry) in entries.iter().enumerate() {
            let slot = &mut nodes[entry.candidate];
            if entry.is_call {
                slot.call = index + 1;
            } else {
                slot.ret = index + 1;
            }
        }
        for (index, slot) in nodes.iter_mut().enumerate().skip(optional_start) {
            slot.call = index - optional_start + 1;
        }

        let mut observers_left = vec![0; value_count];
        let mut optional_writers = vec![Vec::new(); value_count];
        for (index, candidate) in candidates.iter().enumerate() {
            if let Some(value) = candidate.action.observed() {
                observers_left[value as usize] += 1;
            }
            if let (false, Some(value)) = (candidate.required, candidate.action.written()) {
                optional_writers[value as usize].push(index);
            }
        }
        let words = candidates.len().div_ceil(64);

        Self {
            candidates,
            events: Links::new(entries.len()),
            entries,
            optional: Links::new(candidates.len() - optional_start),
            optional_start,
            nodes,
            linearized: vec![0; words],
            observers_left,
            optional_writers,
            canonical: vec![0; words],
            state: ABSENT,
            required_left: optional_start,
            stack: Vec::new(),
            cache: HashSet::default(),
            longest_prefix: Vec::new(),
            longest_prefix_state: ABSENT,
        }
    }

    /// Runs the search. Returns whether a linearization exists, or `None` if
    /// the search took more than `max_steps` steps.
    fn run(&mut self, max_steps: u64) -> Option<bool> {
        let mut cursor = Cursor::Start;
        let mut steps: u64 = 0;
        loop {
            if self.required_left == 0 {
                return Some(true);
            }
            if steps == max_steps {
                return None;
            }
            steps += 1;
            cursor = match cursor {
                Cursor::Start => self.step_start(),
                Cursor::Event(node) => self.step_event(node),
                Cursor::Optional { node, limit } => self.step_optional(node, limit),
                Cursor::Backtrack => match self.backtrack() {
                    Some(cursor) => cursor,
                    None => return Some(false),
                },
            };
        }
    }

    /// Linearizes a read that may come next and returns the current value,
    /// if there is one, without trying alternatives. This is safe because
    /// any linearization from here that places the read later stays valid
    /// with the read moved to the front: a read changes nothing, and every
    /// operation that must precede it is already linearized.
    fn step_start(&mut self) -> Cursor {
        let mut node = self.events.next[0];
        while node != 0 {
            let entry = self.entries[node - 1];
            if !entry.is_call {
                break;
            }
            if self.candidates[entry.candidate].action == Action::Read(self.state) {
                return if self.try_linearize(entry.candidate, 0, true) {
                    Cursor::Start
                } else {
                    // The configuration after the read was explored and
                    // failed, so this one fails too.
                    Cursor::Backtrack
                };
            }
            node = self.events.next[node];
        }
        Cursor::Event(self.events.next[0])
    }

    fn step_event(&mut self, node: usize) -> Cursor {
        if node == 0 {
            // Unreachable while a required candidate is left, because its
            // completion is in the list, but harmless: try optional ones.
            return self.first_optional(usize::MAX);
        }
        let entry = self.entries[node - 1];
        if !entry.is_call {
            // Candidates invoked after this completion cannot come next.
            return self.first_optional(entry.position);
        }
        if self.try_linearize(entry.candidate, 0, false) {
            Cursor::Start
        } else {
            Cursor::Event(self.events.next[node])
        }
    }

    fn first_optional(&self, limit: usize) -> Cursor {
        Cursor::Optional {
            node: self.optional.next[0],
            limit,
        }
    }

    fn step_optional(&mut self, node: usize, limit: usize) -> Cursor {
        if node == 0 {
            return Cursor::Backtrack;
        }
        let candidate = self.optional_start + node - 1;
        if self.candidates[candidate].invoke > limit {
            return Cursor::Backtrack;
        }
        if !self.is_useless(candidate) && self.try_linearize(candidate, limit, false) {
            Cursor::Start
        } else {
            Cursor::Optional {
                node: self.optional.next[node],
                limit,
            }
        }
    }

    /// Linearizes `candidate` next if the model allows it and the resulting
    /// configuration is new. Returns whether it did.
    fn try_linearize(&mut self, candidate: usize, limit: usize, forced: bool) -> bool {
        let Some(new_state) = self.candidates[candidate].action.apply(self.state) else {
            return false;
        };
        self.mark_linearized(candidate);
        if !self.cache.insert(CacheKey::new(new_state, &self.canonical)) {
            self.unmark_linearized(candidate);
            return false;
        }
        self.stack.push(Frame {
            candidate,
            prev_state: self.state,
            limit,
            forced,
        });
        self.state = new_state;
        let nodes = self.nodes[candidate];
        if self.candidates[candidate].required {
            self.events.remove(nodes.call);
            self.events.remove(nodes.ret);
            self.required_left -= 1;
        } else {
            self.optional.remove(nodes.call);
        }
        true
    }

    /// Undoes the last linearized candidate that was not forced, and any
    /// forced ones after it, and returns the cursor just past it. Returns
    /// `None` if the stack runs out.
    fn backtrack(&mut self) -> Option<Cursor> {
        if self.stack.len() > self.longest_prefix.len() {
            self.longest_prefix = self.stack.iter().map(|frame| frame.candidate).collect();
            self.longest_prefix_state = self.state;
        }
        loop {
            let frame = self.undo_last()?;
            if !frame.forced {
                return Some(self.cursor_after(&frame));
            }
        }
    }

    fn undo_last(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let candidate = frame.candidate;
        self.unmark_linearized(candidate);
        self.state = frame.prev_state;
        let nodes = self.nodes[candidate];
        if self.candidates[candidate].required {
            self.events.restore(nodes.ret);
            self.events.restore(nodes.call);
            self.required_left += 1;
        } else {
            self.optional.restore(nodes.call);
        }
        Some(frame)
    }

    /// Returns true for an optional candidate whose written value no
    /// unlinearized candidate observes.
    fn is_useless(&self, candidate: usize) -> bool {
        let candidate = &self.candidates[candidate];
        !candidate.required
            && candidate
                .action
                .written()
                .is_some_and(|value| self.observers_left[value as usize] == 0)
    }

    /// Adds `candidate` to the linearized and canonical sets, and adds the
    /// optional writers of the value it observes to the canonical set if it
    /// was the last observer.
    fn mark_linearized(&mut self, candidate: usize) {
        set_bit(&mut self.linearized, candidate);
        set_bit(&mut self.canonical, candidate);
        if let Some(value) = self.candidates[candidate].action.observed() {
            let left = &mut self.observers_left[value as usize];
            *left -= 1;
            if *left == 0 {
                for &writer in &self.optional_writers[value as usize] {
                    set_bit(&mut self.canonical, writer);
                }
            }
        }
    }

    /// Undoes [`Search::mark_linearized`].
    fn unmark_linearized(&mut self, candidate: usize) {
        if let Some(value) = self.candidates[candidate].action.observed() {
            let left = &mut self.observers_left[value as usize];
            if *left == 0 {
                for &writer in &self.optional_writers[value as usize] {
                    if !test_bit(&self.linearized, writer) {
                        clear_bit(&mut self.canonical, writer);
                    }
                }
            }
            *left += 1;
        }
        clear_bit(&mut self.linearized, candidate);
        if !self.is_useless(candidate) {
            clear_bit(&mut self.canonical, candidate);
        }
    }

    /// Returns the cursor at the candidate after the one of `frame`, which
    /// was just undone.
    fn cursor_after(&self, frame: &Frame) -> Cursor {
        let call = self.nodes[frame.candidate].call;
        if self.candidates[frame.candidate].required {
            Cursor::Event(self.events.next[call])
        } else {
            Cursor::Optional {
                node: self.optional.next[call],
                limit: frame.limit,
            }
        }
    }
}

fn set_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

fn clear_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] &= !(1 << (index % 64));
}

fn test_bit(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_skips_full_and_trailing_zero_words() {
        let key = CacheKey::new(3, &[u64::MAX, u64::MAX, 0b101, 0, 0]);
        assert_eq!(key.full_words, 2);
        assert_eq!(&*key.rest, &[0b101]);
    }

    #[test]
    fn cache_key_of_all_ones_is_empty_rest() {
        let key = CacheKey::new(0, &[u64::MAX, u64::MAX]);
        assert_eq!(key.full_words, 2);
        assert!(key.rest.is_empty());
    }

    #[test]
    fn cache_key_keeps_zero_words_between_ones() {
        let key = CacheKey::new(0, &[1, 0, 1, 0]);
        assert_eq!(key.full_words, 0);
        assert_eq!(&*key.rest, &[1, 0, 1]);
    }

    #[test]
    fn links_restore_in_reverse_order() {
        let mut links = Links::new(3);
        links.remove(2);
        links.remove(1);
        assert_eq!(links.next[0], 3);
        links.restore(1);
        links.restore(2);
        assert_eq!(links.next, vec![1, 2, 3, 0]);
        assert_eq!(links.prev, vec![3, 0, 1, 2]);
    }

    #[test]
    fn value_ids_ignore_object_key_order() {
        let mut values = ValueIds::default();
        let first = values.id(Some(
            &serde_json::json!({"a": 1, "b": [2, {"c": 3, "d": 4}]}),
        ));
        let second = values.id(Some(
            &serde_json::json!({"b": [2, {"d": 4, "c": 3}], "a": 1}),
        ));
        assert_eq!(first, second);
        assert_ne!(first, ABSENT);
    }

    #[test]
    fn value_ids_map_null_to_absent() {
        let mut values = ValueIds::default();
        assert_eq!(values.id(Some(&Value::Null)), ABSENT);
        assert_eq!(values.id(None), ABSENT);
        assert_ne!(values.id(Some(&serde_json::json!("x"))), ABSENT);
    }

    #[test]
    fn drop_unobserved_keeps_observed_info_write() {
        let operation = |f, value, outcome, result| Operation {
            process: 0,
            f,
            key: "k".to_owned(),
            value,
            outcome,
            result,
            invoke_index: 0,
            complete_index: None,
        };
        let seen = operation(Function::Write, Some("seen".into()), Outcome::Info, None);
        let unseen = operation(Function::Write, Some("unseen".into()), Outcome::Info, None);
        let read = operation(Function::Read, None, Outcome::Ok, Some("seen".into()));
        let mut values = ValueIds::default();
        let candidates = build_candidates(&[&seen, &unseen, &read], &mut values);
        let sources: Vec<usize> = candidates.iter().map(|c| c.source).collect();
        assert_eq!(sources, vec![2, 0]);
    }
}

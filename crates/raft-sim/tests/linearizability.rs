//! Tests of the linearizability checker on hand-written, file-based and
//! generated histories.

use std::collections::HashMap;
use std::time::Instant;

use raft_sim::history::{Event, EventType, Function, History, Outcome, parse_jsonl};
use raft_sim::linearizability::{CheckOptions, CheckResult, UnknownReason, check, check_with};
use serde_json::{Value, json};

/// Builds a history from lines of the form `PROCESS TYPE F KEY [VALUE]`,
/// where VALUE is JSON without spaces, for example `1 invoke cas x [null,"b"]`.
fn history(text: &str) -> Vec<Event> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(
                fields.len() == 4 || fields.len() == 5,
                "bad test line {line:?}"
            );
            let event = json!({
                "process": fields[0].parse::<u64>().expect("process is an integer"),
                "type": fields[1],
                "f": fields[2],
                "key": fields[3],
                "value": fields.get(4).map(|value| serde_json::from_str::<Value>(value)
                    .expect("value is JSON")),
            });
            serde_json::from_value(event).expect("test line is a valid event")
        })
        .collect()
}

fn assert_linearizable(events: &[Event]) {
    let result = check(events);
    assert!(
        result.is_linearizable(),
        "expected linearizable, got: {result}"
    );
}

/// Asserts that the history is not linearizable and that `key` is the key
/// named in the counterexample.
fn assert_not_linearizable(events: &[Event], key: &str) {
    match check(events) {
        CheckResult::NotLinearizable(counterexample) => assert_eq!(counterexample.key, key),
        other => panic!("expected key {key:?} to be non-linearizable, got: {other}"),
    }
}

#[test]
fn sequential_history_passes() {
    let events = history(
        r#"
        0 invoke read x
        0 ok read x null
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke read x
        1 ok read x "a"
        1 invoke write x "b"
        1 ok write x "b"
        0 invoke read x
        0 ok read x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn empty_history_passes() {
    assert_linearizable(&[]);
}

#[test]
fn concurrent_read_sees_old_value() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke write x "b"
        1 invoke read x
        1 ok read x "a"
        0 ok write x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn concurrent_read_sees_new_value() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke write x "b"
        1 invoke read x
        1 ok read x "b"
        0 ok write x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn concurrent_writes_read_in_either_order() {
    // Both writes overlap both reads, so the reads may see "a" then "b" or
    // "b" then "a", but the second read must not go back.
    let base = r#"
        0 invoke write x "a"
        1 invoke write x "b"
        2 invoke read x
        3 invoke read x
        2 ok read x FIRST
        3 ok read x SECOND
        0 ok write x "a"
        1 ok write x "b"
        "#;
    for (first, second) in [("a", "b"), ("b", "a"), ("a", "a"), ("null", "a")] {
        let first = if first == "null" {
            "null".to_owned()
        } else {
            format!("{first:?}")
        };
        let text = base
            .replace("FIRST", &first)
            .replace("SECOND", &format!("{second:?}"));
        assert_linearizable(&history(&text));
    }
}

#[test]
fn timed_out_write_observed_later() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke write x "b"
        1 info write x "b"
        0 invoke read x
        0 ok read x "a"
        0 invoke read x
        0 ok read x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn timed_out_write_never_observed() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke write x "b"
        1 info write x "b"
        0 invoke read x
        0 ok read x "a"
        2 invoke write x "c"
        0 invoke read x
        0 ok read x "a"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn uncompleted_write_observed_by_read() {
    let events = history(
        r#"
        1 invoke write x "b"
        0 invoke read x
        0 ok read x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn process_invokes_again_after_info() {
    let events = history(
        r#"
        1 invoke write x "a"
        1 info write x "a"
        1 invoke write x "b"
        1 ok write x "b"
        0 invoke read x
        0 ok read x "a"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn cas_chain_passes() {
    let events = history(
        r#"
        0 invoke cas x [null,"a"]
        0 ok cas x [null,"a"]
        1 invoke cas x ["a","b"]
        1 ok cas x ["a","b"]
        2 invoke cas x ["a","c"]
        2 fail cas x ["a","c"]
        0 invoke cas x ["b","d"]
        0 ok cas x ["b","d"]
        1 invoke read x
        1 ok read x "d"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn concurrent_cas_only_one_wins() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke cas x ["a","b"]
        2 invoke cas x ["a","c"]
        1 ok cas x ["a","b"]
        2 fail cas x ["a","c"]
        0 invoke read x
        0 ok read x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn timed_out_cas_applies_later() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke cas x ["a","b"]
        1 info cas x ["a","b"]
        0 invoke read x
        0 ok read x "a"
        0 invoke read x
        0 ok read x "b"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn delete_then_read_null() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke delete x
        0 ok delete x
        1 invoke read x
        1 ok read x null
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn info_read_constrains_nothing() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke read x
        1 info read x "never-written"
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn several_keys_interleaved() {
    let events = history(
        r#"
        0 invoke write x "x1"
        1 invoke write y "y1"
        2 invoke read x
        0 ok write x "x1"
        3 invoke cas y [null,"y0"]
        1 ok write y "y1"
        2 ok read x "x1"
        3 fail cas y [null,"y0"]
        0 invoke delete x
        1 invoke read y
        0 ok delete x
        1 ok read y "y1"
        2 invoke read x
        2 ok read x null
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn structured_values_compare_as_json() {
    let events = history(
        r#"
        0 invoke write x {"a":1,"b":[1,2]}
        0 ok write x {"a":1,"b":[1,2]}
        1 invoke cas x [{"b":[1,2],"a":1},7]
        1 ok cas x [{"b":[1,2],"a":1},7]
        1 invoke read x
        1 ok read x 7
        "#,
    );
    assert_linearizable(&events);
}

#[test]
fn stale_read_after_write_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke write x "b"
        0 ok write x "b"
        1 invoke read x
        1 ok read x "a"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn read_of_unwritten_value_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        1 invoke read x
        1 ok read x "z"
        0 ok write x "a"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn reads_against_real_time_fail() {
    // Both reads overlap the write, but the read that finished first saw the
    // new value, so the later read must not see the old one.
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke write x "b"
        1 invoke read x
        1 ok read x "b"
        2 invoke read x
        2 ok read x "a"
        0 ok write x "b"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn cas_with_impossible_expected_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke cas x ["b","c"]
        1 ok cas x ["b","c"]
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn cas_expecting_absent_on_present_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke cas x [null,"c"]
        1 ok cas x [null,"c"]
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn failed_write_read_later_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 fail write x "a"
        1 invoke read x
        1 ok read x "a"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn failed_cas_observed_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke cas x ["a","b"]
        1 fail cas x ["a","b"]
        2 invoke read x
        2 ok read x "b"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn lost_acknowledged_write_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        1 invoke read x
        1 ok read x null
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn read_after_delete_sees_old_value_fails() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 ok write x "a"
        0 invoke delete x
        0 ok delete x
        1 invoke read x
        1 ok read x "a"
        "#,
    );
    assert_not_linearizable(&events, "x");
}

#[test]
fn first_failing_key_in_sorted_order() {
    let events = history(
        r#"
        0 invoke write b "1"
        0 ok write b "1"
        0 invoke read b
        0 ok read b null
        1 invoke write a "1"
        1 ok write a "1"
        1 invoke read a
        1 ok read a "2"
        2 invoke write c "1"
        2 ok write c "1"
        "#,
    );
    assert_not_linearizable(&events, "a");
}

#[test]
fn counterexample_lists_key_operations() {
    let events = history(
        r#"
        0 invoke write x "a"
        1 invoke write y "other"
        0 ok write x "a"
        1 ok write y "other"
        2 invoke cas x ["a","b"]
        2 info cas x ["a","b"]
        0 invoke read x
        0 ok read x null
        3 invoke read x
        "#,
    );
    let CheckResult::NotLinearizable(counterexample) = check(&events) else {
        panic!("expected a counterexample");
    };
    assert_eq!(counterexample.key, "x");
    assert_eq!(counterexample.operations.len(), 4);
    assert!(counterexample.operations.iter().all(|op| op.key == "x"));
    assert_eq!(counterexample.longest_prefix, vec![0]);
    assert_eq!(counterexample.prefix_state, Some(json!("a")));

    let text = counterexample.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].contains("key \"x\" is not linearizable"), "{text}");
    assert_eq!(
        lines[1],
        "  op 0: events 0..2, process 0: write \"a\" => ok"
    );
    assert_eq!(
        lines[2],
        "  op 1: events 4..5, process 2: cas \"a\" to \"b\" => info"
    );
    assert_eq!(
        lines[3],
        "  op 2: events 6..7, process 0: read => ok absent"
    );
    assert_eq!(
        lines[4],
        "  op 3: events 8..(none), process 3: read => info (no completion)"
    );
    assert!(
        lines[5].contains("prefix: op 0; the key's value is then \"a\""),
        "{text}"
    );
}

#[test]
fn step_budget_gives_unknown() {
    let events = generate(&GeneratorConfig {
        operations: 200,
        keys: 1,
        ..GeneratorConfig::default()
    });
    let options = CheckOptions {
        max_steps_per_key: 10,
    };
    match check_with(&events, &options) {
        CheckResult::Unknown {
            key,
            reason: UnknownReason::StepBudgetExceeded { max_steps },
        } => {
            assert_eq!(key, "k0");
            assert_eq!(max_steps, 10);
        }
        other => panic!("expected an exceeded budget, got: {other}"),
    }
}

#[test]
fn failure_wins_over_unknown() {
    // Key "a" needs more than the budget of 20 steps, and key "b" fails
    // within it.
    let mut events = generate(&GeneratorConfig {
        operations: 100,
        keys: 1,
        ..GeneratorConfig::default()
    });
    for event in &mut events {
        event.key = "a".to_owned();
    }
    events.extend(history(
        r#"
        100 invoke write b "1"
        100 ok write b "1"
        100 invoke read b
        100 ok read b "2"
        "#,
    ));
    let options = CheckOptions {
        max_steps_per_key: 20,
    };
    match check_with(&events, &options) {
        CheckResult::NotLinearizable(counterexample) => assert_eq!(counterexample.key, "b"),
        other => panic!("expected key \"b\" to fail, got: {other}"),
    }
}

#[test]
fn invalid_events_give_unknown() {
    let events = history(
        r#"
        0 invoke write x "a"
        0 invoke write y "b"
        "#,
    );
    match check(&events) {
        CheckResult::Unknown {
            key,
            reason: UnknownReason::InvalidHistory(_),
        } => assert_eq!(key, "y"),
        other => panic!("expected an invalid history, got: {other}"),
    }
}

#[test]
fn data_file_linearizable() {
    let text = include_str!("data/linearizable.jsonl");
    let events = parse_jsonl(text).expect("data file parses");
    assert_eq!(events.len(), 21);
    assert_linearizable(&events);
}

#[test]
fn data_file_lost_write() {
    let text = include_str!("data/lost-write.jsonl");
    let events = parse_jsonl(text).expect("data file parses");
    assert_not_linearizable(&events, "y");
}

#[test]
fn recorder_history_checks() {
    let mut history = History::new();
    history
        .invoke(0, Function::Write, "x", Some(json!("a")))
        .unwrap();
    history.invoke(1, Function::Read, "x", None).unwrap();
    history.complete(0, Outcome::Ok, Some(json!("a"))).unwrap();
    history.complete(1, Outcome::Ok, Some(json!("a"))).unwrap();
    history.invoke(1, Function::Read, "x", None).unwrap();
    history.complete(1, Outcome::Ok, None).unwrap();
    assert_not_linearizable(history.events(), "x");
}

/// The SplitMix64 generator: a small, fast, seedable PRNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct GeneratorConfig {
    seed: u64,
    operations: usize,
    keys: usize,
    processes: u64,
    /// The maximum time from an invocation to the linearization point, and
    /// from there to the completion. Linearization points are 100 apart.
    spread: u64,
    info_percent: u64,
    fail_percent: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            operations: 200,
            keys: 2,
            processes: 6,
            spread: 400,
            info_percent: 5,
            fail_percent: 5,
        }
    }
}

/// Generates a linearizable history: operations run one after another on the
/// model at linearization points 100 apart, and each gets a random window
/// around its point, so that windows overlap. Written values are unique.
fn generate(config: &GeneratorConfig) -> Vec<Event> {
    let mut rng = SplitMix64(config.seed);
    let mut state: HashMap<String, Option<String>> = HashMap::new();
    // For each process slot: its current id and the time it is free again.
    let mut slots: Vec<(u64, u64)> = (0..config.processes).map(|slot| (slot, 0)).collect();
    let mut timed: Vec<(u64, Event)> = Vec::new();
    let mut now = 0;

    for index in 0..config.operations {
        now += 100;
        let free: Vec<usize> = (0..slots.len()).filter(|&s| slots[s].1 < now).collect();
        let slot = if free.is_empty() {
            let earliest = (0..slots.len()).min_by_key(|&s| slots[s].1).unwrap();
            now = slots[earliest].1 + 1;
            earliest
        } else {
            free[rng.below(free.len() as u64) as usize]
        };
        let (process, free_at) = slots[slot];
        let lowest = (free_at + 1).max(now.saturating_sub(config.spread));
        let invoke_time = lowest + rng.below(now - lowest + 1);

        let key = format!("k{}", rng.below(config.keys as u64));
        let current = state.entry(key.clone()).or_default();
        let outcome = if rng.percent(config.info_percent) {
            Outcome::Info
        } else if rng.percent(config.fail_percent) {
            Outcome::Fail
        } else {
            Outcome::Ok
        };
        // Whether the operation takes effect, if it can.
        let applies = match outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Info => rng.percent(50),
        };

        let to_value = |value: &Option<String>| value.clone().map_or(Value::Null, Value::from);
        let (f, invoke_value, outcome, result) = match rng.below(10) {
            0..4 => {
                let result = (outcome == Outcome::Ok).then(|| to_value(current));
                (Function::Read, Value::Null, outcome, result)
            }
            4..7 => {
                let value = format!("w{index}");
                if applies {
                    *current = Some(value.clone());
                }
                (Function::Write, json!(value), outcome, None)
            }
            7..9 => {
                let expected = if rng.percent(70) {
                    current.clone()
                } else {
                    Some(format!("w{}", rng.below(index as u64 + 1)))
                };
                let new = format!("c{index}");
                let invoke_value = json!([to_value(&expected), new]);
                if expected == *current {
                    if applies {
                        *current = Some(new);
                    }
                    (Function::Cas, invoke_value, outcome, None)
                } else {
                    // A cas whose expected value is not current cannot be ok.
                    let outcome = if outcome == Outcome::Ok {
                        Outcome::Fail
                    } else {
                        outcome
                    };
                    (Function::Cas, invoke_value, outcome, None)
                }
            }
            _ => {
                if applies {
                    *current = None;
                }
                (Function::Delete, Value::Null, outcome, None)
            }
        };

        let event = |kind, value: Option<Value>| Event {
            process,
            kind,
            f,
            key: key.clone(),
            value: value.filter(|value| !value.is_null()),
        };
        timed.push((
            invoke_time,
            event(EventType::Invoke, Some(invoke_value.clone())),
        ));
        let complete_time = if outcome == Outcome::Info {
            // An info completion may come before the linearization point,
            // because the operation may still take effect after it.
            invoke_time + rng.below(now + config.spread - invoke_time)
        } else {
            now + rng.below(config.spread)
        };
        let completion_value = if f == Function::Read {
            result
        } else {
            Some(invoke_value)
        };
        if outcome == Outcome::Info && rng.percent(30) {
            // No completion at all: the process is gone, and a new process
            // takes over its slot, as Jepsen does.
            slots[slot] = (process + config.processes, complete_time);
        } else {
            timed.push((complete_time, event(outcome.event_type(), completion_value)));
            slots[slot].1 = complete_time;
        }
    }

    // A stable sort keeps an invocation before a completion of the same
    // process at the same time.
    timed.sort_by_key(|(time, _)| *time);
    timed.into_iter().map(|(_, event)| event).collect()
}

/// Returns the position of a random `ok` read completion, if there is one.
fn random_ok_read(events: &[Event], rng: &mut SplitMix64) -> Option<usize> {
    let reads: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].f == Function::Read && events[i].kind == EventType::Ok)
        .collect();
    (!reads.is_empty()).then(|| reads[rng.below(reads.len() as u64) as usize])
}

#[test]
fn generated_histories_pass() {
    for seed in 0..40 {
        let config = GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        };
        let events = generate(&config);
        let result = check(&events);
        assert!(result.is_linearizable(), "seed {seed}: {result}");
    }
}

#[test]
fn generated_history_round_trips_jsonl() {
    let events = generate(&GeneratorConfig::default());
    let mut text = Vec::new();
    raft_sim::history::write_jsonl(&events, &mut text).unwrap();
    let parsed = parse_jsonl(std::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!(parsed, events);
}

#[test]
fn corrupted_read_of_unwritten_value_fails() {
    for seed in 0..40 {
        let mut events = generate(&GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        });
        let mut rng = SplitMix64(seed);
        let position = random_ok_read(&events, &mut rng).expect("history has ok reads");
        events[position].value = Some(json!("never-written"));
        let key = events[position].key.clone();
        assert_not_linearizable(&events, &key);
    }
}

#[test]
fn corrupted_read_of_future_write_fails() {
    let mut corrupted = 0;
    for seed in 0..40 {
        let mut events = generate(&GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        });
        let mut rng = SplitMix64(seed);
        let position = random_ok_read(&events, &mut rng).expect("history has ok reads");
        // A write invoked after the read completed, of a value written once.
        let key = events[position].key.clone();
        let future_write = events[position..].iter().find(|event| {
            event.key == key && event.kind == EventType::Invoke && event.f == Function::Write
        });
        let Some(future_write) = future_write else {
            continue;
        };
        events[position].value = future_write.value.clone();
        assert_not_linearizable(&events, &key);
        corrupted += 1;
    }
    assert!(corrupted >= 30, "only {corrupted} seeds had a later write");
}

/// A simulator-sized history: 2,000 operations on 5 keys by 8 processes.
/// Run it in release mode with `--nocapture` to see the time.
#[test]
fn large_history_checks() {
    let config = GeneratorConfig {
        seed: 7,
        operations: 2_000,
        keys: 5,
        processes: 8,
        spread: 600,
        ..GeneratorConfig::default()
    };
    let events = generate(&config);
    let started = Instant::now();
    let result = check(&events);
    eprintln!("2,000 operations checked in {:?}", started.elapsed());
    assert!(result.is_linearizable(), "{result}");

    let mut rng = SplitMix64(config.seed);
    let mut corrupted = events.clone();
    let position = random_ok_read(&corrupted, &mut rng).expect("history has ok reads");
    corrupted[position].value = Some(json!("never-written"));
    let started = Instant::now();
    let result = check(&corrupted);
    eprintln!(
        "2,000 operations with a bad read checked in {:?}",
        started.elapsed()
    );
    assert!(
        matches!(result, CheckResult::NotLinearizable(_)),
        "expected a counterexample, got: {result}"
    );
}

//! Tests of the history format: parsing, validation, writing and recording.

use raft_sim::history::{
    Event, EventType, Function, History, HistoryError, Outcome, operations, parse_jsonl,
    write_jsonl,
};
use serde_json::json;

#[test]
fn parse_reads_fields_and_skips_blank_lines() {
    let text = r#"{"process":3,"type":"invoke","f":"cas","key":"k","value":[null,"b"],"time":12}

{"process":3,"type":"ok","f":"cas","key":"k","value":[null,"b"]}
"#;
    let events = parse_jsonl(text).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        Event {
            process: 3,
            kind: EventType::Invoke,
            f: Function::Cas,
            key: "k".to_owned(),
            value: Some(json!([null, "b"])),
        }
    );
    assert_eq!(events[1].kind, EventType::Ok);
}

#[test]
fn parse_treats_missing_and_null_value_alike() {
    let text = r#"{"process":0,"type":"invoke","f":"read","key":"k"}
{"process":0,"type":"ok","f":"read","key":"k","value":null}"#;
    let events = parse_jsonl(text).unwrap();
    assert_eq!(events[0].value, None);
    assert_eq!(events[1].value, None);
}

#[test]
fn parse_rejects_invalid_json_with_line() {
    let text = "\n{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"k\"}\n{oops\n";
    let error = parse_jsonl(text).unwrap_err();
    assert!(
        matches!(error, HistoryError::Json { line: 3, .. }),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("line 3: invalid event"),
        "{error}"
    );
}

#[test]
fn parse_rejects_unknown_function() {
    let text = r#"{"process":0,"type":"invoke","f":"append","key":"k"}"#;
    let error = parse_jsonl(text).unwrap_err();
    assert!(
        matches!(error, HistoryError::Json { line: 1, .. }),
        "{error}"
    );
}

#[test]
fn parse_rejects_missing_key() {
    let text = r#"{"process":0,"type":"invoke","f":"read"}"#;
    let error = parse_jsonl(text).unwrap_err();
    assert!(
        matches!(error, HistoryError::Json { line: 1, .. }),
        "{error}"
    );
}

#[test]
fn parse_rejects_second_invocation() {
    let text = r#"{"process":0,"type":"invoke","f":"read","key":"k"}
{"process":0,"type":"invoke","f":"write","key":"j","value":"v"}"#;
    let error = parse_jsonl(text).unwrap_err();
    match &error {
        HistoryError::AlreadyOutstanding {
            line,
            process,
            f,
            key,
            pending_line,
        } => {
            assert_eq!(*line, 2);
            assert_eq!(*process, 0);
            assert_eq!(*f, Function::Write);
            assert_eq!(key, "j");
            assert_eq!(*pending_line, 1);
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn parse_rejects_completion_without_invocation() {
    let text = r#"{"process":5,"type":"ok","f":"read","key":"k","value":"v"}"#;
    let error = parse_jsonl(text).unwrap_err();
    assert!(
        matches!(
            error,
            HistoryError::NotOutstanding {
                line: 1,
                process: 5
            }
        ),
        "{error}"
    );
}

#[test]
fn parse_rejects_mismatched_completion() {
    let text = r#"{"process":0,"type":"invoke","f":"read","key":"k"}
{"process":0,"type":"ok","f":"read","key":"other","value":"v"}"#;
    let error = parse_jsonl(text).unwrap_err();
    assert!(
        matches!(
            error,
            HistoryError::MismatchedCompletion {
                line: 2,
                invoke_line: 1,
                invoked_f: Function::Read,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn parse_rejects_invalid_values() {
    let cases = [
        r#"{"process":0,"type":"invoke","f":"write","key":"k"}"#,
        r#"{"process":0,"type":"invoke","f":"write","key":"k","value":null}"#,
        r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":"a"}"#,
        r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":["a"]}"#,
        r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":["a",null]}"#,
        r#"{"process":0,"type":"invoke","f":"read","key":"k","value":"a"}"#,
        r#"{"process":0,"type":"invoke","f":"delete","key":"k","value":1}"#,
    ];
    for text in cases {
        let error = parse_jsonl(text).unwrap_err();
        assert!(
            matches!(error, HistoryError::InvalidValue { line: 1, .. }),
            "{text}: {error}"
        );
    }
}

#[test]
fn operations_pair_and_mark_missing_as_info() {
    let text = r#"{"process":0,"type":"invoke","f":"write","key":"k","value":"a"}
{"process":1,"type":"invoke","f":"read","key":"k"}
{"process":0,"type":"fail","f":"write","key":"k","value":"a"}
"#;
    let events = parse_jsonl(text).unwrap();
    let operations = operations(&events).unwrap();
    assert_eq!(operations.len(), 2);
    assert_eq!(operations[0].outcome, Outcome::Fail);
    assert_eq!(operations[0].invoke_index, 0);
    assert_eq!(operations[0].complete_index, Some(2));
    assert_eq!(operations[1].outcome, Outcome::Info);
    assert_eq!(operations[1].complete_index, None);
}

#[test]
fn write_then_parse_round_trips() {
    let mut history = History::new();
    history
        .invoke(0, Function::Cas, "k", Some(json!([null, {"n": 1}])))
        .unwrap();
    history.invoke(1, Function::Read, "k", None).unwrap();
    history.complete(0, Outcome::Info, None).unwrap();
    history.complete(1, Outcome::Ok, None).unwrap();
    let mut out = Vec::new();
    write_jsonl(history.events(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.ends_with('\n'));
    assert_eq!(parse_jsonl(&text).unwrap(), history.events());
}

#[test]
fn recorder_copies_function_and_key() {
    let mut history = History::new();
    history
        .invoke(7, Function::Write, "k", Some(json!("v")))
        .unwrap();
    history.complete(7, Outcome::Ok, Some(json!("v"))).unwrap();
    let completion = &history.events()[1];
    assert_eq!(completion.kind, EventType::Ok);
    assert_eq!(completion.f, Function::Write);
    assert_eq!(completion.key, "k");
    assert_eq!(history.operations()[0].outcome, Outcome::Ok);
}

#[test]
fn recorder_rejects_and_keeps_state() {
    let mut history = History::new();
    let error = history.complete(2, Outcome::Ok, None).unwrap_err();
    assert!(matches!(
        error,
        HistoryError::NotOutstanding {
            line: 1,
            process: 2
        }
    ));
    history.invoke(2, Function::Read, "k", None).unwrap();
    let error = history.invoke(2, Function::Read, "k", None).unwrap_err();
    assert!(matches!(
        error,
        HistoryError::AlreadyOutstanding {
            line: 2,
            pending_line: 1,
            ..
        }
    ));
    let error = history.invoke(3, Function::Write, "k", None).unwrap_err();
    assert!(matches!(error, HistoryError::InvalidValue { line: 2, .. }));
    assert_eq!(history.events().len(), 1);
    assert_eq!(history.into_events().len(), 1);
}

#[test]
fn recorder_allows_invoke_after_info() {
    let mut history = History::new();
    history.invoke(0, Function::Delete, "k", None).unwrap();
    history.complete(0, Outcome::Info, None).unwrap();
    history.invoke(0, Function::Read, "k", None).unwrap();
    assert_eq!(history.events().len(), 3);
}

//! The raftctl command line against real raftd processes.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{ProcessCluster, free_ports, raftctl_bin};

const TIMEOUT: Duration = Duration::from_secs(10);

fn raftctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(raftctl_bin())
        .args(["--endpoints", endpoints, "--timeout", "5s"])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn put_get_del_through_cli() {
    let cluster = ProcessCluster::start(3);
    cluster.wait_for_leader(TIMEOUT);
    let endpoints = cluster.endpoints().join(",");

    let put = raftctl(&endpoints, &["put", "greeting", "hello world"]);
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert_eq!(stdout(&put), "OK\n");

    let get = raftctl(&endpoints, &["get", "greeting"]);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    assert_eq!(stdout(&get), "hello world\n");

    let del = raftctl(&endpoints, &["del", "greeting"]);
    assert_eq!(stdout(&del), "1\n");

    let missing = raftctl(&endpoints, &["get", "greeting"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr(&missing).contains("key not found"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(stdout(&missing), "");
}

#[test]
fn status_json_reports_every_endpoint() {
    let mut cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let down = if leader == 3 { 2 } else { 3 };
    cluster.kill_node(down);
    let endpoints = cluster.endpoints().join(",");

    let output = raftctl(&endpoints, &["-w", "json", "status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    for (position, row) in rows.iter().enumerate() {
        let id = position as u64 + 1;
        let object = row.as_object().unwrap();
        assert_eq!(object["endpoint"], cluster.node(id).client_addr);
        if id == down {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            assert_eq!(keys, ["endpoint", "error"]);
            continue;
        }
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "applied_index",
                "commit_index",
                "endpoint",
                "id",
                "leader_id",
                "role",
                "term"
            ]
        );
        assert_eq!(object["id"], id);
        assert_eq!(object["leader_id"], leader);
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(object["role"], role);
    }

    let table = raftctl(&endpoints, &["status"]);
    let text = stdout(&table);
    assert!(text.starts_with("ENDPOINT"), "{text}");
    assert!(text.contains("leader"), "{text}");
}

#[test]
fn no_leader_fails_with_timeout_message() {
    let ports = free_ports(2);
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let output = Command::new(raftctl_bin())
        .args([
            "--endpoints",
            &endpoints,
            "--timeout",
            "500ms",
            "put",
            "k",
            "v",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no leader answered within"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn invalid_timeout_is_usage_error() {
    let output = Command::new(raftctl_bin())
        .args(["--timeout", "soon", "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--timeout"), "{}", stderr(&output));
}

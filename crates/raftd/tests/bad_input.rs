//! Garbage, oversized frames and invalid flags: each gets a clear error,
//! and the node keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{ProcessCluster, raftd_bin};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `bytes` on a fresh connection and returns once the node closes it
/// or a second passes.
fn send_raw(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The node may close the connection before all bytes are written.
    let _ = stream.write_all(bytes);
    let mut buf = [0; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[test]
fn garbage_and_oversized_frames_rejected() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let mut client = cluster.client(TIMEOUT);
    smol::block_on(client.put(b"before", b"1")).unwrap();

    let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe\x00garbage".to_vec();
    let mut oversized = (u32::MAX - 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(b"{}");
    let mut bad_json = 9u32.to_be_bytes().to_vec();
    bad_json.extend_from_slice(b"not json!");

    for id in 1..=3 {
        let node = cluster.node(id);
        for addr in [&node.peer_addr, &node.client_addr] {
            send_raw(addr, &garbage);
            send_raw(addr, &oversized);
            send_raw(addr, &bad_json);
        }
    }

    // Every node is still up and the cluster still serves reads and writes.
    smol::block_on(client.put(b"after", b"2")).unwrap();
    assert_eq!(
        smol::block_on(client.get(b"before")).unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(
        smol::block_on(client.get(b"after")).unwrap(),
        Some(b"2".to_vec())
    );
    for id in 1..=3 {
        assert!(cluster.status(id).is_some(), "node {id} stopped answering");
    }
    assert_eq!(cluster.wait_for_leader(TIMEOUT), leader);

    let log = cluster.log_of(leader);
    assert!(
        log.contains("exceeds the limit"),
        "the oversized frame was not logged:\n{log}"
    );
}

fn run_raftd(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(raftd_bin()).args(args).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CLUSTER: &str = "1=127.0.0.1:1/127.0.0.1:2";

#[test]
fn missing_flag_named_in_error() {
    let (code, stderr) = run_raftd(&[
        "--data-dir",
        "/tmp/unused",
        "--peer-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
        "--initial-cluster",
        CLUSTER,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--id"), "{stderr}");
}

#[test]
fn malformed_flags_named_in_error() {
    let base = |flag: &'static str, value: &'static str| {
        let mut args = vec![
            "--id",
            "1",
            "--data-dir",
            "/tmp/unused",
            "--peer-addr",
            "127.0.0.1:1",
            "--client-addr",
            "127.0.0.1:2",
            "--initial-cluster",
            CLUSTER,
        ];
        let position = args.iter().position(|arg| *arg == flag).unwrap();
        args[position + 1] = value;
        args
    };
    let cases = [
        ("--id", "one"),
        ("--id", "7"),
        ("--peer-addr", "localhost"),
        ("--client-addr", "127.0.0.1:99999"),
        ("--initial-cluster", "1=127.0.0.1:1"),
    ];
    for (flag, value) in cases {
        let (code, stderr) = run_raftd(&base(flag, value));
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }

    let (code, stderr) = run_raftd(&[
        "--id",
        "1",
        "--data-dir",
        "/tmp/unused",
        "--peer-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
        "--initial-cluster",
        CLUSTER,
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "150",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--election-timeout"), "{stderr}");
}

#[test]
fn listen_port_differs_from_cluster_entry() {
    let (code, stderr) = run_raftd(&[
        "--id",
        "1",
        "--data-dir",
        "/tmp/unused",
        "--peer-addr",
        "127.0.0.1:9",
        "--client-addr",
        "127.0.0.1:2",
        "--initial-cluster",
        CLUSTER,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--peer-addr port 9"), "{stderr}");
}

#[test]
fn data_dir_of_other_cluster_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster-id"),
        "raftd-cluster-0000000000000000\n",
    )
    .unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (code, stderr) = run_raftd(&[
        "--id",
        "1",
        "--data-dir",
        data_dir,
        "--peer-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
        "--initial-cluster",
        CLUSTER,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("belongs to cluster"), "{stderr}");
    assert!(stderr.contains(data_dir), "{stderr}");
}

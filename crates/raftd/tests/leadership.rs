//! Leadership on real raftd processes: moving it on purpose, and losing it
//! when the followers stop answering.

mod common;

use std::time::{Duration, Instant};

use common::{ELECTION_MS, ProcessCluster};
use raft_core::NodeId;

const TIMEOUT: Duration = Duration::from_secs(10);

fn signal(cluster: &ProcessCluster, id: u64, signal: libc::c_int) {
    let pid = cluster.node(id).child.as_ref().expect("node runs").id();
    // SAFETY: kill(2) on the pid of a child this test started and has not
    // reaped, so the pid names that child.
    let result = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}) failed");
}

#[test]
fn move_leader_hands_over_and_writes_continue() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let target = if leader == 3 { 1 } else { leader + 1 };
    let mut client = cluster.client(TIMEOUT);
    smol::block_on(client.put(b"before", b"1")).unwrap();

    let status = smol::block_on(client.move_leader(NodeId(target)))
        .unwrap_or_else(|error| panic!("move-leader failed: {error}\n{}", cluster.logs()));
    assert_eq!(status.id, NodeId(target));
    assert_eq!(status.leader_id, Some(NodeId(target)));
    assert_eq!(cluster.wait_for_leader(TIMEOUT), target);

    smol::block_on(client.put(b"after", b"2")).unwrap();
    assert_eq!(
        smol::block_on(client.get(b"before")).unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(
        smol::block_on(client.get(b"after")).unwrap(),
        Some(b"2".to_vec())
    );
}

#[test]
fn move_leader_cli_reports_new_leader() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let target = if leader == 1 { 2 } else { 1 };
    let output = std::process::Command::new(common::raftctl_bin())
        .args(["--endpoints", &cluster.endpoints().join(",")])
        .args(["move-leader", &target.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with(&format!("leadership moved to node {target}")),
        "{stdout}"
    );
}

#[test]
fn leader_steps_down_when_followers_stop() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        signal(&cluster, *id, libc::SIGSTOP);
    }
    let stopped_at = Instant::now();

    // Check-quorum: without responses from a quorum for an election
    // timeout, the leader steps down.
    let mut stepped_down = None;
    while stopped_at.elapsed() < TIMEOUT {
        let status = cluster
            .status(leader)
            .expect("the leader keeps answering status");
        if status.leader_id != Some(NodeId(leader)) {
            stepped_down = Some(stopped_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for id in &followers {
        signal(&cluster, *id, libc::SIGCONT);
    }
    let elapsed = stepped_down.expect("the leader never stepped down");
    eprintln!("leader stepped down {elapsed:?} after its followers stopped");
    // Two election timeouts, plus slack for process scheduling on a busy
    // machine.
    let bound = Duration::from_millis(2 * ELECTION_MS + 300);
    assert!(
        elapsed <= bound,
        "stepped down after {elapsed:?}, bound {bound:?}"
    );

    // Once the followers resume, the cluster elects a leader again.
    cluster.wait_for_leader(TIMEOUT);
}

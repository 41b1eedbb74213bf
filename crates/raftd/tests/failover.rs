//! Real raftd processes on loopback: a leader killed with SIGKILL, a node
//! restarted and caught up, and a whole cluster restarted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ProcessCluster;

const TIMEOUT: Duration = Duration::from_secs(10);

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Reads every key through the leader and checks it against `expected`.
fn check_all(cluster: &ProcessCluster, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut client = cluster.client(TIMEOUT);
    for (key, value) in expected {
        let read = smol::block_on(client.get(key)).unwrap_or_else(|error| {
            panic!(
                "read of {:?} failed: {error}\n{}",
                String::from_utf8_lossy(key),
                cluster.logs()
            )
        });
        assert_eq!(
            read.as_deref(),
            Some(value.as_slice()),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn cluster_survives_leader_kill_and_restarts() {
    let mut cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let mut client = cluster.client(TIMEOUT);
    let mut acknowledged = BTreeMap::new();

    for i in 0..50 {
        let value = format!("value-{i}").into_bytes();
        smol::block_on(client.put(&key(i), &value))
            .unwrap_or_else(|error| panic!("put {i} failed: {error}\n{}", cluster.logs()));
        acknowledged.insert(key(i), value);
    }
    let deleted = smol::block_on(client.delete(&key(0))).unwrap();
    assert!(deleted);
    acknowledged.remove(&key(0));

    // Kill the leader; the survivors must elect a new one and keep every
    // acknowledged write.
    cluster.kill_node(leader);
    let killed_at = Instant::now();
    smol::block_on(client.put(b"after-kill", b"1"))
        .unwrap_or_else(|error| panic!("put after kill failed: {error}\n{}", cluster.logs()));
    let failover = killed_at.elapsed();
    eprintln!("first write acknowledged {failover:?} after the leader's SIGKILL");
    acknowledged.insert(b"after-kill".to_vec(), b"1".to_vec());
    let new_leader = cluster.wait_for_leader(TIMEOUT);
    assert_ne!(new_leader, leader);
    check_all(&cluster, &acknowledged);
    assert_eq!(smol::block_on(client.get(&key(0))).unwrap(), None);

    // Restart the killed node; it must catch up with the leader's log.
    cluster.start_node(leader);
    let target = cluster.status(new_leader).unwrap().commit_index;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = cluster.status(leader);
        if status
            .as_ref()
            .is_some_and(|status| status.applied_index >= target)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {leader} did not catch up to {target}: {status:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Restart all three; everything acknowledged must read back.
    for id in 1..=3 {
        cluster.kill_node(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_for_leader(TIMEOUT);
    check_all(&cluster, &acknowledged);
}

#[test]
fn follower_redirects_to_leader() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT);
    let follower = if leader == 1 { 2 } else { 1 };
    // A client that knows only a follower reaches the leader through the
    // not-leader reply.
    let mut client =
        raftctl::Client::new(vec![cluster.node(follower).client_addr.clone()], TIMEOUT);
    smol::block_on(client.put(b"k", b"v")).unwrap();
    assert_eq!(
        smol::block_on(client.get(b"k")).unwrap(),
        Some(b"v".to_vec())
    );

    let status = cluster.status(follower).unwrap();
    assert_eq!(status.leader_id.map(|id| id.0), Some(leader));
}

//! Measures the time from a leader's SIGKILL to the first write that the
//! new leader acknowledges, over several runs of a fresh three-node cluster
//! of real raftd processes on loopback.
//!
//! ```text
//! cargo build --release -p raftd
//! cargo run --release -p raftd --example failover -- [RUNS] [HEARTBEAT_MS] [ELECTION_MS]
//! ```
//!
//! The timing defaults to raftd's own: a 100 ms heartbeat and a 1000 ms
//! election timeout.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::ProcessCluster;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|text| text.parse().expect("arguments are positive integers"))
        .collect();
    let runs = args.first().copied().unwrap_or(7) as usize;
    let heartbeat_ms = args.get(1).copied().unwrap_or(100);
    let election_ms = args.get(2).copied().unwrap_or(1000);
    let timeout = Duration::from_secs(20);
    let mut samples = Vec::new();
    for run in 1..=runs {
        let mut cluster = ProcessCluster::start_with(3, heartbeat_ms, election_ms);
        let leader = cluster.wait_for_leader(timeout);
        let mut client = cluster.client(timeout);
        smol::block_on(client.put(b"before", b"1")).expect("put before the kill");

        cluster.kill_node(leader);
        let killed_at = Instant::now();
        smol::block_on(client.put(b"after", b"2")).expect("put after the kill");
        let elapsed = killed_at.elapsed();
        println!("run {run}: first write acknowledged {elapsed:?} after SIGKILL");
        samples.push(elapsed);
    }
    samples.sort_unstable();
    println!(
        "heartbeat {heartbeat_ms} ms, election timeout {election_ms} ms: median {:?}, min {:?}, max {:?} over {runs} runs",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    );
}

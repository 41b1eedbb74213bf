//! Measures the write throughput of one client that loops `put`, each write
//! waiting for the previous one to commit.
//!
//! ```text
//! cargo run --release -p raftctl --example put_loop -- [COUNT] [ENDPOINTS]
//! ```
//!
//! COUNT defaults to 2000 writes; ENDPOINTS to `raftd local`'s defaults.

use std::time::{Duration, Instant};

use raftctl::Client;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .map(|text| text.parse().expect("COUNT must be a positive integer"))
        .unwrap_or(2000);
    let endpoints = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003".to_owned());
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let mut client = Client::new(endpoints, Duration::from_secs(10));

    smol::block_on(async {
        // One write first, so the connection to the leader is open.
        client
            .put(b"put-loop-warmup", b"x")
            .await
            .expect("warm-up put");
        let mut latencies = Vec::with_capacity(count);
        let start = Instant::now();
        for i in 0..count {
            let key = format!("put-loop-{i:08}");
            let begin = Instant::now();
            client
                .put(key.as_bytes(), b"0123456789abcdef0123456789abcdef")
                .await
                .unwrap_or_else(|error| panic!("put {i} failed: {error}"));
            latencies.push(begin.elapsed());
        }
        let elapsed = start.elapsed();
        latencies.sort_unstable();
        let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        println!(
            "{count} puts in {:.2} s: {:.0} writes/s; latency p50 {:?}, p99 {:?}, max {:?}",
            elapsed.as_secs_f64(),
            count as f64 / elapsed.as_secs_f64(),
            percentile(0.5),
            percentile(0.99),
            latencies[latencies.len() - 1]
        );
    });
}

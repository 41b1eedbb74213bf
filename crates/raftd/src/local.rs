//! `raftd local`: a cluster of raftd processes on 127.0.0.1, for trying the
//! product and for development.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use transport::handshake::{Hello, HelloReply};
use transport::{ClientRequest, ClientResponse, Envelope, NodeStatus, RequestId, frame};

/// How long `raftd local` waits for the new cluster to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long a stopping node gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Number of nodes to start (1 to 9; 3 or 5 tolerate 1 or 2 failures).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,

    /// Directory for the nodes' data and logs, one subdirectory per node.
    /// Reusing it restarts the same cluster with its data.
    #[arg(long, value_name = "DIR", default_value = "raftd-local")]
    data_dir: PathBuf,

    /// Client port of node 1. Node N listens for clients on P+N-1 and for
    /// peers on P+100+N-1.
    #[arg(long, value_name = "P", default_value_t = 4001, value_parser = clap::value_parser!(u16).range(1..=65_000))]
    base_port: u16,

    /// Passed on to every node: time between heartbeats, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    heartbeat_interval: u64,

    /// Passed on to every node: minimum election timeout, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    election_timeout: u64,
}

struct LocalNode {
    id: u16,
    client_addr: String,
    log_path: PathBuf,
    child: Child,
}

pub fn run(args: LocalArgs) -> ExitCode {
    if args.election_timeout < 3 * args.heartbeat_interval {
        eprintln!(
            "error: --election-timeout {} ms must be at least 3 times --heartbeat-interval {} ms\n\nFor more information, try '--help'.",
            args.election_timeout, args.heartbeat_interval
        );
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("raftd local: failed to install a signal handler: {error}");
            return ExitCode::from(1);
        }
    }

    let mut nodes = match start_nodes(&args) {
        Ok(nodes) => nodes,
        Err(message) => {
            eprintln!("raftd local: {message}");
            return ExitCode::from(1);
        }
    };

    let endpoints: Vec<String> = nodes.iter().map(|node| node.client_addr.clone()).collect();
    let code = match wait_for_leader(&endpoints, &stop, &mut nodes) {
        Ok(status) => {
            println!(
                "cluster of {} nodes is up; leader is node {} (term {})",
                nodes.len(),
                status.id,
                status.term
            );
            println!("client endpoints: {}", endpoints.join(","));
            for node in &nodes {
                println!(
                    "node {}: pid {}, client {}, log {}",
                    node.id,
                    node.child.id(),
                    node.client_addr,
                    node.log_path.display()
                );
            }
            println!("export RAFTCTL_ENDPOINTS={}", endpoints.join(","));
            println!("press Ctrl-C to stop the cluster");
            watch(&stop, &mut nodes);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("raftd local: {message}");
            ExitCode::from(1)
        }
    };
    stop_nodes(&mut nodes);
    code
}

fn start_nodes(args: &LocalArgs) -> Result<Vec<LocalNode>, String> {
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot find the raftd executable: {error}"))?;
    let ids: Vec<u16> = (1..=args.nodes).collect();
    let client_port = |id: u16| u32::from(args.base_port) + u32::from(id) - 1;
    let peer_port = |id: u16| client_port(id) + 100;
    if peer_port(args.nodes) > 65_535 {
        return Err(format!(
            "--base-port {} leaves no room for {} nodes' peer ports; pick a lower port",
            args.base_port, args.nodes
        ));
    }
    let initial_cluster: Vec<String> = ids
        .iter()
        .map(|&id| {
            format!(
                "{id}=127.0.0.1:{}/127.0.0.1:{}",
                peer_port(id),
                client_port(id)
            )
        })
        .collect();
    let initial_cluster = initial_cluster.join(",");

    let mut nodes = Vec::new();
    for id in ids {
        let node_dir = args.data_dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)
            .map_err(|error| format!("cannot create {}: {error}", node_dir.display()))?;
        let log_path = node_dir.join("raftd.log");
        let log = open_log(&log_path)?;
        let client_addr = format!("127.0.0.1:{}", client_port(id));
        let child = Command::new(&exe)
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node_dir)
            .arg("--peer-addr")
            .arg(format!("127.0.0.1:{}", peer_port(id)))
            .arg("--client-addr")
            .arg(&client_addr)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--heartbeat-interval")
            .arg(args.heartbeat_interval.to_string())
            .arg("--election-timeout")
            .arg(args.election_timeout.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        match child {
            Ok(child) => nodes.push(LocalNode {
                id,
                client_addr,
                log_path,
                child,
            }),
            Err(error) => {
                stop_nodes(&mut nodes);
                return Err(format!("failed to start node {id}: {error}"));
            }
        }
    }
    Ok(nodes)
}

/// The last lines of a node's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn open_log(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))
}

fn wait_for_leader(
    endpoints: &[String],
    stop: &AtomicBool,
    nodes: &mut [LocalNode],
) -> Result<NodeStatus, String> {
    let deadline = Instant::now() + LEADER_WAIT;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        for node in nodes.iter_mut() {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!(
                    "node {} exited with {status}; the end of {}:\n{}",
                    node.id,
                    node.log_path.display(),
                    log_tail(&node.log_path)
                ));
            }
        }
        for endpoint in endpoints {
            if let Ok(status) = query_status(endpoint)
                && status.leader_id == Some(status.id)
            {
                return Ok(status);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "no leader was elected within {LEADER_WAIT:?}; see the node logs under the data directory"
    ))
}

/// Waits for Ctrl-C or SIGTERM, reporting nodes that exit on their own.
/// Returns early when every node has exited.
fn watch(stop: &AtomicBool, nodes: &mut [LocalNode]) {
    let mut reported = vec![false; nodes.len()];
    while !stop.load(Ordering::Relaxed) {
        if reported.iter().all(|reported| *reported) {
            eprintln!("raftd local: every node has exited; stopping");
            return;
        }
        for (node, reported) in nodes.iter_mut().zip(&mut reported) {
            if !*reported && let Ok(Some(status)) = node.child.try_wait() {
                eprintln!(
                    "raftd local: node {} (pid {}) exited with {status}; see {}",
                    node.id,
                    node.child.id(),
                    node.log_path.display()
                );
                *reported = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop_nodes(nodes: &mut [LocalNode]) {
    let mut running = 0;
    for node in nodes.iter_mut() {
        if matches!(node.child.try_wait(), Ok(None)) {
            running += 1;
        }
    }
    for node in nodes.iter() {
        // SAFETY: kill(2) on the pid of a child this process started and has
        // not reaped yet, so the pid cannot name another process.
        unsafe {
            libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut() {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    eprintln!("raftd local: stopped {running} running nodes");
}

/// Asks one node for its status over a blocking connection.
fn query_status(endpoint: &str) -> std::io::Result<NodeStatus> {
    let addr = endpoint
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    write_frame(&mut stream, &Hello::client())?;
    let reply: HelloReply = read_frame(&mut stream)?;
    if !reply.accepted {
        return Err(std::io::Error::other("handshake rejected"));
    }
    let request = Envelope {
        id: RequestId(1),
        body: ClientRequest::Status,
    };
    write_frame(&mut stream, &request)?;
    let response: Envelope<ClientResponse> = read_frame(&mut stream)?;
    match response.body {
        ClientResponse::Status(status) => Ok(status),
        other => Err(std::io::Error::other(format!(
            "unexpected response {other:?}"
        ))),
    }
}

fn write_frame<T: serde::Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    frame::encode(value, frame::MAX_CLIENT_FRAME, &mut bytes).map_err(std::io::Error::other)?;
    stream.write_all(&bytes)
}

fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut decoder = frame::FrameDecoder::new(frame::MAX_CLIENT_FRAME);
    let mut buf = [0; 4096];
    loop {
        if let Some(body) = decoder.next_frame().map_err(std::io::Error::other)? {
            return frame::decode(&body).map_err(std::io::Error::other);
        }
        let read = stream.read(&mut buf)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        decoder.extend(&buf[..read]);
    }
}

//! Helpers for tests that run real raftd processes on loopback ports.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftctl::Client;
use transport::NodeStatus;

/// Heartbeat interval the test clusters run with, in milliseconds.
pub const HEARTBEAT_MS: u64 = 50;
/// Minimum election timeout the test clusters run with, in milliseconds.
pub const ELECTION_MS: u64 = 500;

pub struct ProcessNode {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub child: Option<Child>,
}

/// A cluster of raftd processes in a temporary directory. Dropping it kills
/// every process it started.
pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<ProcessNode>,
    pub initial_cluster: String,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

/// Picks `count` distinct free loopback ports by binding port 0.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

/// The raftd binary: the one cargo built for this test, or for an example,
/// the one beside the examples directory.
pub fn raftd_bin() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_raftd") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("locate the running executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("examples run from target/PROFILE/examples")
        .join("raftd");
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --release -p raftd`",
        path.display()
    );
    path
}

/// The raftctl binary, built beside raftd by `cargo build --workspace
/// --bins`: `cargo test` builds only the binaries of the package under test.
pub fn raftctl_bin() -> PathBuf {
    let path = raftd_bin().with_file_name("raftctl");
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

impl ProcessCluster {
    pub fn start(size: u64) -> ProcessCluster {
        ProcessCluster::start_with(size, HEARTBEAT_MS, ELECTION_MS)
    }

    /// Starts `size` nodes with the given heartbeat interval and election
    /// timeout, in milliseconds.
    pub fn start_with(size: u64, heartbeat_ms: u64, election_ms: u64) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let ports = free_ports(2 * size as usize);
        let mut nodes = Vec::new();
        for id in 1..=size {
            let index = (id - 1) as usize;
            let data_dir = dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&data_dir).unwrap();
            nodes.push(ProcessNode {
                id,
                peer_addr: format!("127.0.0.1:{}", ports[2 * index]),
                client_addr: format!("127.0.0.1:{}", ports[2 * index + 1]),
                log_path: data_dir.join("raftd.log"),
                data_dir,
                child: None,
            });
        }
        let initial_cluster = nodes
            .iter()
            .map(|node| format!("{}={}/{}", node.id, node.peer_addr, node.client_addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcessCluster {
            dir,
            nodes,
            initial_cluster,
            heartbeat_ms,
            election_ms,
        };
        for id in 1..=size {
            cluster.start_node(id);
        }
        cluster
    }

    pub fn node(&self, id: u64) -> &ProcessNode {
        &self.nodes[(id - 1) as usize]
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.client_addr.clone())
            .collect()
    }

    pub fn client(&self, timeout: Duration) -> Client {
        Client::new(self.endpoints(), timeout)
    }

    pub fn start_node(&mut self, id: u64) {
        let initial_cluster = self.initial_cluster.clone();
        let heartbeat = self.heartbeat_ms.to_string();
        let election = self.election_ms.to_string();
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .unwrap();
        let child = Command::new(raftd_bin())
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--peer-addr", &node.peer_addr])
            .args(["--client-addr", &node.client_addr])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--heartbeat-interval", &heartbeat])
            .args(["--election-timeout", &election])
            .env("RAFTD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start raftd");
        node.child = Some(child);
    }

    /// Stops node `id` with SIGKILL and reaps it.
    pub fn kill_node(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("node is running");
        child.kill().expect("send SIGKILL");
        child.wait().expect("reap raftd");
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        let node = &mut self.nodes[(id - 1) as usize];
        match node.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn status(&self, id: u64) -> Option<NodeStatus> {
        let client = Client::new(
            vec![self.node(id).client_addr.clone()],
            Duration::from_secs(1),
        );
        smol::block_on(client.status(&self.node(id).client_addr)).ok()
    }

    /// Waits until a running node reports itself leader and returns its id.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for node in &self.nodes {
                if node.child.is_none() {
                    continue;
                }
                if let Some(status) = self.status(node.id)
                    && status.leader_id == Some(status.id)
                {
                    return node.id;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no leader within {timeout:?}\n{}", self.logs());
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- node {} log (last lines) ---\n", node.id));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default()
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

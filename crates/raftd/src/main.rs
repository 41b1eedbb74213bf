//! `raftd`: one node of a replicated key-value store, or with `raftd local`,
//! a whole cluster of them on this machine.

mod local;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use raft_core::NodeId;
use raftd::cluster::{self, Member};
use raftd::node::{Node, NodeConfig};
use raftd::storage::{ThreadedStorage, WakeFn};
use raftd::wal::{OsDisk, WalOptions};
use transport::{PeerAddr, TransportConfig};
use transport_epoll::EpollTransport;

#[derive(Debug, Parser)]
#[command(
    name = "raftd",
    version,
    about = "One node of a replicated key-value store on Raft.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Logs go to standard error; set RAFTD_LOG (for example RAFTD_LOG=debug) to change the level. \
Exit status: 0 after SIGTERM or Ctrl-C, 1 when the node fails (for example on a disk error \
or a damaged log), 2 on invalid flags."
)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a cluster of raftd processes on 127.0.0.1 and wait until they
    /// have a leader; stop them all on Ctrl-C or SIGTERM.
    Local(local::LocalArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// This node's id: a positive integer listed in --initial-cluster.
    #[arg(long, value_name = "N", required = true)]
    id: Option<u64>,

    /// Directory for this node's write-ahead log. Created if missing.
    #[arg(long, value_name = "DIR", required = true)]
    data_dir: Option<PathBuf>,

    /// Address to listen on for other nodes (Raft messages).
    #[arg(long, value_name = "HOST:PORT", required = true, value_parser = parse_host_port)]
    peer_addr: Option<String>,

    /// Address to listen on for clients such as raftctl.
    #[arg(long, value_name = "HOST:PORT", required = true, value_parser = parse_host_port)]
    client_addr: Option<String>,

    /// Every member with its peer and client address:
    /// 1=PEER_HOST:PORT/CLIENT_HOST:PORT,2=...,3=... (the same value on every node).
    #[arg(long, value_name = "ID=PEER/CLIENT,...", required = true, value_parser = parse_members)]
    initial_cluster: Option<MemberList>,

    /// Name of this cluster; nodes refuse peers whose token or member list differs.
    #[arg(long, value_name = "TOKEN", default_value = "raftd-cluster")]
    initial_cluster_token: String,

    /// Time between the leader's heartbeats, in milliseconds. Also the Raft tick.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    heartbeat_interval: u64,

    /// Time a follower waits without hearing from a leader before it starts an
    /// election, in milliseconds. Each node draws its actual timeout at random
    /// from [MS, 2*MS). Must be at least 3 times --heartbeat-interval.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    election_timeout: u64,

    /// How the leader confirms a read: `safe` runs a heartbeat round per read
    /// batch; `lease` skips it while a quorum acknowledged a heartbeat within
    /// the last election timeout minus two heartbeats, which assumes clock
    /// rates differ by less than 2 heartbeats per election timeout.
    #[arg(long, value_name = "MODE", default_value = "safe", value_parser = parse_read_mode)]
    read_mode: raft_core::ReadMode,
}

fn parse_read_mode(text: &str) -> Result<raft_core::ReadMode, String> {
    match text {
        "safe" => Ok(raft_core::ReadMode::Safe),
        "lease" => Ok(raft_core::ReadMode::Lease),
        _ => Err(format!("{text:?} is not a read mode; use safe or lease")),
    }
}

/// The parsed `--initial-cluster`. A newtype, because clap would take a bare
/// `Vec` for a flag that repeats.
#[derive(Clone, Debug)]
struct MemberList(Vec<Member>);

fn parse_members(text: &str) -> Result<MemberList, cluster::ClusterSpecError> {
    cluster::parse_initial_cluster(text).map(MemberList)
}

fn parse_host_port(text: &str) -> Result<String, String> {
    if cluster::is_host_port(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not HOST:PORT with a port from 1 to 65535"
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Local(args)) => local::run(args),
        None => run_node(cli.node),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only help on a terminal; `raftd local` and most service
    // managers send standard error to a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Prints a usage error that names the flag and exits with status 2, as clap
/// does for the errors it finds itself.
fn usage_error(message: String) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

fn run_node(args: NodeArgs) -> ExitCode {
    // clap enforces these four flags when no subcommand is given.
    let id = NodeId(args.id.expect("required by clap"));
    let data_dir = args.data_dir.expect("required by clap");
    let peer_addr = args.peer_addr.expect("required by clap");
    let client_addr = args.client_addr.expect("required by clap");
    let members = args.initial_cluster.expect("required by clap").0;

    if !members.iter().any(|member| member.id == id) {
        return usage_error(format!(
            "--id {id} is not a member of --initial-cluster; add it there or pick one of its ids"
        ));
    }
    if args.election_timeout < 3 * args.heartbeat_interval {
        return usage_error(format!(
            "--election-timeout {} ms must be at least 3 times --heartbeat-interval {} ms",
            args.election_timeout, args.heartbeat_interval
        ));
    }
    let peer_listen = match resolve(&peer_addr) {
        Ok(addr) => addr,
        Err(message) => return usage_error(format!("--peer-addr {message}")),
    };
    let client_listen = match resolve(&client_addr) {
        Ok(addr) => addr,
        Err(message) => return usage_error(format!("--client-addr {message}")),
    };

    // The listen ports must be the ones the other members dial, or peers and
    // clients would never reach this node.
    let member = members
        .iter()
        .find(|member| member.id == id)
        .expect("checked above");
    for (flag, listen, advertised) in [
        ("--peer-addr", peer_listen, &member.peer_addr),
        ("--client-addr", client_listen, &member.client_addr),
    ] {
        let advertised_port = advertised
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        if advertised_port != Some(listen.port()) {
            return usage_error(format!(
                "{flag} port {} differs from node {id}'s address {advertised} in --initial-cluster; use the same port in both",
                listen.port()
            ));
        }
    }

    let cluster_id = cluster::cluster_id(&args.initial_cluster_token, &members);
    if let Err(message) = check_cluster_id(&data_dir, &cluster_id) {
        eprintln!("error: {message}");
        return ExitCode::from(1);
    }
    let peers = members
        .iter()
        .map(|member| PeerAddr {
            id: member.id,
            addr: member.peer_addr.clone(),
        })
        .collect();
    let transport_config = TransportConfig::new(id, cluster_id, peers);
    let transport = match EpollTransport::bind(transport_config, peer_listen, client_listen) {
        Ok(transport) => transport,
        Err(error) => {
            tracing::error!(%error, "failed to start the transport");
            return ExitCode::from(1);
        }
    };

    let config = NodeConfig {
        id,
        data_dir,
        members,
        tick_interval: Duration::from_millis(args.heartbeat_interval),
        election_ticks: (args.election_timeout / args.heartbeat_interval) as u32,
        wal: WalOptions::default(),
        seed: seed_from_clock(id),
        record_applied: false,
        max_entries_per_append: 1024,
        read_mode: args.read_mode,
    };
    // The log thread wakes the event loop when a write completes, so the
    // loop never polls for completions.
    let waker = transport.waker();
    let wake: WakeFn = Box::new(move || {
        if let Err(error) = waker.wake() {
            tracing::warn!(%error, "failed to wake the event loop after a log write");
        }
    });
    let build_storage = |wal, dir| ThreadedStorage::spawn(wal, dir, Some(wake));
    let mut node = match Node::with_storage(config, OsDisk, transport, build_storage) {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "failed to start the node");
            return ExitCode::from(1);
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            tracing::error!(signal, %error, "failed to install a signal handler");
            return ExitCode::from(1);
        }
    }
    tracing::info!(node = id.0, peer_addr, client_addr, "raftd started");
    match node.run(|| stop.load(Ordering::Relaxed)) {
        Ok(()) => {
            tracing::info!(node = id.0, "raftd stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(node = id.0, %error, "raftd stopped after an error");
            ExitCode::from(1)
        }
    }
}

/// Name of the file in the data directory that records the cluster id the
/// data belongs to.
const CLUSTER_ID_FILE: &str = "cluster-id";

/// Records `cluster_id` in a new data directory, or checks that an existing
/// one belongs to the same cluster, so that a node never joins another
/// cluster with the log of an old one.
fn check_cluster_id(data_dir: &std::path::Path, cluster_id: &str) -> Result<(), String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim() == cluster_id => Ok(()),
        Ok(stored) => Err(format!(
            "{} belongs to cluster {:?}, but --initial-cluster and --initial-cluster-token give {cluster_id:?}; \
             start the node with its original flags, or move the data directory aside to join as a new node",
            data_dir.display(),
            stored.trim()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|error| format!("cannot create {}: {error}", data_dir.display()))?;
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&path)?;
                std::io::Write::write_all(&mut file, format!("{cluster_id}\n").as_bytes())?;
                file.sync_all()?;
                std::fs::File::open(data_dir)?.sync_all()
            };
            write().map_err(|error| format!("cannot write {}: {error}", path.display()))
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|error| format!("{addr:?} cannot be resolved: {error}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolved to no address"))
}

/// Returns a seed for election timeouts that differs between nodes and runs.
fn seed_from_clock(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

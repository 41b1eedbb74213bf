//! One seed of the simulation: a fault phase, a liveness phase, and the
//! checks.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use raft_core::{NodeId, Role};
use transport_tcp_mem::Faults;

use crate::cluster::{MAX_ELECTION_TIMEOUT, SimCluster, peer_addr};
use crate::invariants::{Invariants, Violation};
use crate::rng::Rng;
use crate::trace::Trace;
use crate::workload::Workload;

/// Virtual time of one simulation step.
pub const STEP: Duration = Duration::from_millis(1);

/// Settings of one seed.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size: 3 or 5.
    pub nodes: u64,
    /// Virtual time of the fault phase.
    pub fault_time: Duration,
    /// Print the trace as it happens.
    pub trace: bool,
    /// Name of a deliberate bug to switch on (needs the `bug-injection`
    /// feature).
    pub bug: Option<String>,
}

impl SimOptions {
    pub fn new(seed: u64, nodes: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes,
            fault_time: Duration::from_secs(3),
            trace: false,
            bug: None,
        }
    }
}

/// The fault rates a seed drew.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub faults: Faults,
    /// Mean time between fault events.
    pub fault_interval: Duration,
    pub clock_rates_permille: Vec<u32>,
    pub client_rate_permille: u64,
    /// Chance, in percent, that a new leader is crashed within a few
    /// milliseconds of its election, before its first entries spread. Old
    /// entries then meet new leaders, as in the Raft paper's figure 8.
    pub leader_kill_percent: u64,
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drop={:.1}% duplicate={:.1}% extra_delay<={}ms fault_every~{}ms kill_new_leader={}% clock_rates={:?}",
            f64::from(self.faults.drop_ppm) / 10_000.0,
            f64::from(self.faults.duplicate_ppm) / 10_000.0,
            self.faults.max_extra_delay.as_millis(),
            self.fault_interval.as_millis(),
            self.leader_kill_percent,
            self.clock_rates_permille
        )
    }
}

/// Counts of the faults a seed injected.
#[derive(Clone, Debug, Default)]
pub struct FaultCounts {
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub resets: u64,
    pub heals: u64,
}

/// The reason a seed failed.
#[derive(Clone, Debug)]
pub enum Failure {
    Invariant(Violation),
    Node(String),
    Panic(String),
    NoLeader { waited: Duration },
    Diverged { detail: String },
    FinalReadsIncomplete,
    NotLinearizable(String),
    Unknown(String),
    Setup(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invariant(violation) => write!(f, "{violation}"),
            Failure::Node(error) => write!(f, "node error: {error}"),
            Failure::Panic(message) => write!(f, "panic: {message}"),
            Failure::NoLeader { waited } => {
                write!(f, "liveness: no leader {waited:?} after the network healed")
            }
            Failure::Diverged { detail } => write!(f, "liveness: state machines differ: {detail}"),
            Failure::FinalReadsIncomplete => {
                write!(f, "liveness: the final reads did not complete")
            }
            Failure::NotLinearizable(report) => write!(f, "history is not linearizable:\n{report}"),
            Failure::Unknown(reason) => write!(f, "linearizability undecided: {reason}"),
            Failure::Setup(reason) => write!(f, "setup failed: {reason}"),
        }
    }
}

/// The outcome of one seed.
#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub nodes: u64,
    pub plan: FaultPlan,
    pub counts: FaultCounts,
    pub result: Result<(), Failure>,
    pub trace_hash: u64,
    pub trace_tail: Vec<String>,
    /// Virtual time the seed covered.
    pub simulated: Duration,
    /// Client operations completed ok, failed and indeterminate.
    pub operations: (u64, u64, u64),
    /// The recorded history as JSON lines.
    pub history: Vec<String>,
}

impl SeedReport {
    /// One line: the seed, what it drew, and its outcome.
    pub fn summary(&self) -> String {
        let outcome = match &self.result {
            Ok(()) => "ok".to_owned(),
            Err(failure) => format!("FAILED: {}", first_line(&failure.to_string())),
        };
        format!(
            "seed={} nodes={} {} crashes={} pauses={} partitions={} resets={} ops_ok={} ops_fail={} ops_info={} simulated={:.1}s trace={:016x} {outcome}",
            self.seed,
            self.nodes,
            self.plan,
            self.counts.crashes,
            self.counts.pauses,
            self.counts.partitions,
            self.counts.resets,
            self.operations.0,
            self.operations.1,
            self.operations.2,
            self.simulated.as_secs_f64(),
            self.trace_hash
        )
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Runs one seed. A panic anywhere in the nodes counts as a failure of the
/// seed, not of the caller.
pub fn run_seed(options: &SimOptions) -> SeedReport {
    let mut rng = Rng::new(options.seed);
    let plan = draw_plan(&mut rng, options.nodes);
    let mut state = SeedState {
        trace: Trace::new(options.trace),
        leader_kills: Vec::new(),
        leader_kill_percent: plan.leader_kill_percent,
        kill_rng: rng.fork(),
        counts: FaultCounts::default(),
        simulated: Duration::ZERO,
        operations: (0, 0, 0),
        history: Vec::new(),
    };
    enable_bug(options.bug.as_deref());
    let result = catch_unwind(AssertUnwindSafe(|| {
        run(options, &plan, &mut rng, &mut state)
    }))
    .unwrap_or_else(|payload| Err(Failure::Panic(panic_message(&payload))));
    disable_bugs();
    SeedReport {
        seed: options.seed,
        nodes: options.nodes,
        plan,
        counts: state.counts,
        result,
        trace_hash: state.trace.hash(),
        trace_tail: state.trace.tail().to_vec(),
        simulated: state.simulated,
        operations: state.operations,
        history: state.history,
    }
}

struct SeedState {
    trace: Trace,
    /// Crashes of new leaders due at a time: (when, node position, term).
    leader_kills: Vec<(Duration, usize, raft_core::Term)>,
    leader_kill_percent: u64,
    kill_rng: Rng,
    counts: FaultCounts,
    simulated: Duration,
    operations: (u64, u64, u64),
    history: Vec<String>,
}

fn draw_plan(rng: &mut Rng, nodes: u64) -> FaultPlan {
    FaultPlan {
        faults: Faults {
            drop_ppm: *rng.pick(&[0, 10_000, 50_000, 200_000]) as u32,
            duplicate_ppm: rng.range(0, 20_001) as u32,
            max_extra_delay: Duration::from_millis(rng.range(0, 21)),
        },
        fault_interval: Duration::from_millis(rng.range(40, 200)),
        clock_rates_permille: (0..nodes).map(|_| rng.range(900, 1101) as u32).collect(),
        client_rate_permille: rng.range(50, 300),
        leader_kill_percent: *rng.pick(&[0, 0, 25, 50, 90]),
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(feature = "bug-injection")]
fn enable_bug(name: Option<&str>) {
    use raft_core::bug_injection::{self, Bug};
    bug_injection::clear();
    if let Some(bug) = name.and_then(Bug::from_name) {
        bug_injection::set(bug, true);
    }
}

#[cfg(not(feature = "bug-injection"))]
fn enable_bug(name: Option<&str>) {
    assert!(
        name.is_none(),
        "bug injection needs the bug-injection feature"
    );
}

fn disable_bugs() {
    #[cfg(feature = "bug-injection")]
    raft_core::bug_injection::clear();
}

fn run(
    options: &SimOptions,
    plan: &FaultPlan,
    rng: &mut Rng,
    state: &mut SeedState,
) -> Result<(), Failure> {
    let mut fault_rng = rng.fork();
    let workload_rng = rng.fork();
    let mut cluster_rng = rng.fork();
    let mut cluster = SimCluster::new(options.seed, options.nodes, &mut cluster_rng)
        .map_err(|error| Failure::Setup(error.to_string()))?;
    state.trace.record(
        Duration::ZERO,
        format!(
            "seed {} with {} nodes: {plan} batch={} reads={:?}",
            options.seed, options.nodes, cluster.max_entries_per_append, cluster.read_mode
        ),
    );
    for (node, rate) in cluster.nodes.iter_mut().zip(&plan.clock_rates_permille) {
        node.clock_rate_permille = *rate;
    }
    cluster.network.set_faults(plan.faults.clone());
    let workload = Workload::new(5, options.nodes, plan.client_rate_permille, workload_rng);
    let mut world = World {
        cluster,
        workload,
        invariants: Invariants::new(),
        roles: vec![(Role::Follower, raft_core::Term(0)); options.nodes as usize],
    };

    // Fault phase: faults overlap, and the workload runs throughout.
    let fault_end = options.fault_time;
    let mut next_fault = plan.fault_interval;
    while world.cluster.now() < fault_end {
        if world.cluster.now() >= next_fault {
            inject_fault(&mut world.cluster, &mut fault_rng, state);
            let interval = plan.fault_interval.as_millis() as u64;
            next_fault = world.cluster.now()
                + Duration::from_millis(fault_rng.range(interval / 2, interval * 3 / 2 + 1));
        }
        world.step(state, true)?;
    }

    // Liveness phase: heal everything and expect a leader, every client
    // operation finished, readable writes and equal state machines.
    heal_all(&mut world.cluster, state);
    let deadline = world.cluster.now() + 10 * MAX_ELECTION_TIMEOUT;
    world.step_while(state, |world| {
        !has_stable_leader(&world.cluster) && world.cluster.now() < deadline
    })?;
    if !has_stable_leader(&world.cluster) {
        return Err(Failure::NoLeader {
            waited: 10 * MAX_ELECTION_TIMEOUT,
        });
    }
    world.step_while(state, |world| !world.workload.is_idle())?;

    // Read every key. A read that fails (the leader may step down or
    // change meanwhile) is retried once a leader is stable again, until ten
    // election timeouts have passed.
    let mut reads_done = false;
    let deadline = world.cluster.now() + 10 * MAX_ELECTION_TIMEOUT;
    while world.cluster.now() < deadline {
        world.step_while(state, |world| {
            !has_stable_leader(&world.cluster) && world.cluster.now() < deadline
        })?;
        let ok_before = world.workload.counts.0;
        let now = world.cluster.now();
        for line in world.workload.read_all(&world.cluster.network, now) {
            state.trace.record(now, line);
        }
        world.step_while(state, |world| !world.workload.is_idle())?;
        if world.workload.counts.0 >= ok_before + crate::workload::KEYS.len() as u64 {
            reads_done = true;
            break;
        }
    }
    if !reads_done {
        return Err(Failure::FinalReadsIncomplete);
    }
    wait_for_convergence(&mut world, state)?;

    state.simulated = world.cluster.now();
    state.operations = world.workload.counts;
    state.history = world
        .workload
        .history()
        .iter()
        .map(|line| line.to_json())
        .collect();
    check_history(&state.history)
}

/// The parts of a seed that every step changes.
struct World {
    cluster: SimCluster,
    workload: Workload,
    invariants: Invariants,
    /// Each node's last seen role and term, to trace changes.
    roles: Vec<(Role, raft_core::Term)>,
}

impl World {
    fn step(&mut self, state: &mut SeedState, generate: bool) -> Result<(), Failure> {
        step(
            &mut self.cluster,
            &mut self.workload,
            &mut self.invariants,
            &mut self.roles,
            state,
            generate,
        )
    }

    /// Steps without starting client operations while `busy` returns true.
    fn step_while(
        &mut self,
        state: &mut SeedState,
        mut busy: impl FnMut(&World) -> bool,
    ) -> Result<(), Failure> {
        while busy(self) {
            self.step(state, false)?;
        }
        Ok(())
    }
}

fn check_history(history: &[String]) -> Result<(), Failure> {
    let text = history.join("\n");
    let events = crate::history::parse_jsonl(&text)
        .map_err(|error| Failure::Setup(format!("recorded history does not parse: {error}")))?;
    match crate::linearizability::check(&events) {
        crate::linearizability::CheckResult::Linearizable => Ok(()),
        crate::linearizability::CheckResult::NotLinearizable(report) => {
            Err(Failure::NotLinearizable(report.to_string()))
        }
        crate::linearizability::CheckResult::Unknown { key, reason } => {
            Err(Failure::Unknown(format!("key {key}: {reason}")))
        }
    }
}

/// Runs one step: faults that end, every node's loop turn, the checks, the
/// clients, and one millisecond of virtual time.
fn step(
    cluster: &mut SimCluster,
    workload: &mut Workload,
    invariants: &mut Invariants,
    roles: &mut [(Role, raft_core::Term)],
    state: &mut SeedState,
    generate: bool,
) -> Result<(), Failure> {
    let now = cluster.now();
    let restarted = cluster
        .step_nodes()
        .map_err(|error| Failure::Node(error.to_string()))?;
    for position in restarted {
        let id = cluster.nodes[position].id;
        let applied = cluster.applied_index(position).expect("just started");
        state
            .trace
            .record(now, format!("node {id} restarted, applied {applied}"));
        invariants
            .check_restart(id, applied)
            .map_err(Failure::Invariant)?;
    }

    for (position, sim_node) in cluster.nodes.iter_mut().enumerate() {
        let Some(node) = sim_node.node.as_mut() else {
            continue;
        };
        let applied = node.take_applied_log();
        let id = sim_node.id;
        invariants
            .check_applied(id, &applied)
            .map_err(Failure::Invariant)?;
        invariants
            .check_node(node.raw())
            .map_err(Failure::Invariant)?;
        let status = node.raw().status();
        if (status.role, status.term) != roles[position] {
            roles[position] = (status.role, status.term);
            state.trace.record(
                now,
                format!("node {id} is {} in term {}", status.role, status.term),
            );
            if generate
                && status.role == Role::Leader
                && state.kill_rng.chance(state.leader_kill_percent, 100)
            {
                let delay = Duration::from_millis(state.kill_rng.range(0, 5));
                state
                    .leader_kills
                    .push((now + delay, position, status.term));
            }
        }
    }

    let running: Vec<&raft_core::RawNode> = cluster
        .nodes
        .iter()
        .filter_map(|node| node.node.as_ref().map(|node| node.raw()))
        .collect();
    invariants
        .check_election_risk(&running, cluster.nodes.len() / 2 + 1)
        .map_err(Failure::Invariant)?;

    // Crash new leaders whose time has come, if they still lead that term.
    let due: Vec<_> = state
        .leader_kills
        .iter()
        .copied()
        .filter(|(at, _, _)| *at <= now)
        .collect();
    state.leader_kills.retain(|(at, _, _)| *at > now);
    for (_, position, term) in due {
        let still_leads = cluster.nodes[position].node.as_ref().is_some_and(|node| {
            let status = node.raw().status();
            status.role == Role::Leader && status.term == term
        });
        if still_leads {
            let down = Duration::from_millis(state.kill_rng.range(10, 150));
            let id = cluster.nodes[position].id;
            cluster.crash(position, now + down, &mut state.kill_rng);
            state.counts.crashes += 1;
            state
                .trace
                .record(now, format!("fault: crash new leader {id} for {down:?}"));
        }
    }

    for line in workload.step(&cluster.network, now, generate) {
        state.trace.record(now, line);
    }
    cluster.network.advance(STEP);
    Ok(())
}

fn inject_fault(cluster: &mut SimCluster, rng: &mut Rng, state: &mut SeedState) {
    let now = cluster.now();
    let size = cluster.size();
    let mut position = rng.range(0, size) as usize;
    // Half of the faults hit the leader, where most bugs hide.
    if rng.chance(1, 2)
        && let Some(leader) = cluster.leader_position()
    {
        position = leader;
    }
    let id = cluster.nodes[position].id;
    let line = match rng.range(0, 100) {
        0..=19 => {
            let down = Duration::from_millis(rng.range(20, 500));
            cluster.crash(position, now + down, rng);
            state.counts.crashes += 1;
            format!("fault: crash node {id} for {down:?}")
        }
        20..=34 => {
            let down = Duration::from_millis(rng.range(20, 400));
            cluster.pause(position, now + down);
            state.counts.pauses += 1;
            format!("fault: pause node {id} for {down:?}")
        }
        35..=49 => {
            for other in 1..=size {
                if other != id.0 {
                    cluster
                        .network
                        .disconnect(&peer_addr(id), &peer_addr(NodeId(other)));
                }
            }
            state.counts.partitions += 1;
            format!("fault: isolate node {id}")
        }
        50..=59 => {
            let other = NodeId(1 + (id.0 + rng.range(0, size - 1)) % size);
            cluster
                .network
                .cut_one_way(&peer_addr(id), &peer_addr(other));
            state.counts.partitions += 1;
            format!("fault: cut messages from node {id} to node {other}")
        }
        60..=69 => {
            // Partial: `id` still reaches everyone, but the others are
            // split in two groups that do not reach each other.
            let others: Vec<u64> = (1..=size).filter(|other| *other != id.0).collect();
            let (left, right) = others.split_at(others.len() / 2);
            for a in left {
                for b in right {
                    cluster
                        .network
                        .disconnect(&peer_addr(NodeId(*a)), &peer_addr(NodeId(*b)));
                }
            }
            state.counts.partitions += 1;
            format!("fault: partial partition {left:?} | {right:?}, node {id} reaches both")
        }
        70..=79 => {
            cluster.network.reset_connections(&peer_addr(id));
            state.counts.resets += 1;
            format!("fault: reset connections of node {id}")
        }
        _ => {
            cluster.network.heal();
            state.counts.heals += 1;
            "fault: heal partitions".to_owned()
        }
    };
    state.trace.record(now, line);
}

fn heal_all(cluster: &mut SimCluster, state: &mut SeedState) {
    let now = cluster.now();
    cluster.network.heal();
    cluster.network.set_faults(Faults::default());
    for node in &mut cluster.nodes {
        node.down_until = node.down_until.min(now);
    }
    state
        .trace
        .record(now, "liveness: network healed, every node up".to_owned());
}

/// Whether one node leads and every node that runs follows it.
fn has_stable_leader(cluster: &SimCluster) -> bool {
    let statuses: Vec<_> = cluster
        .nodes
        .iter()
        .filter_map(|node| node.node.as_ref())
        .map(|node| node.raw().status())
        .collect();
    let Some(leader) = statuses.iter().find(|status| status.role == Role::Leader) else {
        return false;
    };
    statuses.len() == cluster.nodes.len()
        && statuses
            .iter()
            .all(|status| status.leader == Some(leader.id) && status.term == leader.term)
}

fn wait_for_convergence(world: &mut World, state: &mut SeedState) -> Result<(), Failure> {
    let deadline = world.cluster.now() + 10 * MAX_ELECTION_TIMEOUT;
    loop {
        let contents: Vec<Vec<(Vec<u8>, Vec<u8>)>> = world
            .cluster
            .nodes
            .iter()
            .filter_map(|node| node.node.as_ref())
            .map(|node| {
                node.kv()
                    .iter()
                    .map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .collect()
            })
            .collect();
        let applied: Vec<_> = world
            .cluster
            .nodes
            .iter()
            .filter_map(|node| node.node.as_ref())
            .map(|node| node.kv().applied_index())
            .collect();
        let same = applied.windows(2).all(|pair| pair[0] == pair[1])
            && contents.windows(2).all(|pair| pair[0] == pair[1]);
        if same {
            return Ok(());
        }
        if world.cluster.now() >= deadline {
            return Err(Failure::Diverged {
                detail: format!("applied indexes {applied:?}"),
            });
        }
        world.step(state, false)?;
    }
}

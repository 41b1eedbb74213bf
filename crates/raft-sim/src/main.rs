//! `raft-sim`: runs seeds of the deterministic cluster simulation, replays
//! one seed, or checks a recorded history for linearizability.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raft_sim::sim::{SeedReport, SimOptions, run_seed};

#[derive(Debug, Parser)]
#[command(
    name = "raft-sim",
    version,
    about = "Deterministic simulation of raftd clusters under faults, with a linearizability check.",
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  raft-sim --seeds 1000 --nodes 5      run seeds 0..999 on five nodes\n  raft-sim --seed 42 --trace           replay seed 42 and print its events\n  raft-sim check history.jsonl         check a recorded history\n\nExit status: 0 when every seed passed (or the history is linearizable), 1 when one failed, 2 on invalid usage or input."
)]
struct Args {
    /// Number of seeds to run.
    #[arg(long, value_name = "N", conflicts_with = "seed")]
    seeds: Option<u64>,

    /// First seed of the run.
    #[arg(long, value_name = "S", default_value_t = 0)]
    start: u64,

    /// Replay this one seed.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,

    /// Cluster size.
    #[arg(long, value_name = "3|5", default_value_t = 3, value_parser = parse_nodes)]
    nodes: u64,

    /// Virtual time of each seed's fault phase, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    fault_time: u64,

    /// Print the replayed seed's events as they happen (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,

    /// Print one summary line per seed, not only for failures.
    #[arg(short, long)]
    verbose: bool,

    /// Threads running seeds in parallel; each seed stays on one thread.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,

    /// Switch on a deliberate bug: commit-previous-term,
    /// vote-without-log-check, ack-before-fsync, double-apply,
    /// read-without-round or backtrack-past-conflict. Needs a build with the
    /// bug-injection feature.
    #[arg(long, value_name = "NAME")]
    inject_bug: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a history of JSON lines (Jepsen's event format) for
    /// linearizability against a key-value model.
    Check {
        /// The history file.
        file: std::path::PathBuf,
    },
}

fn parse_nodes(text: &str) -> Result<u64, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!(
            "{text:?} is not a supported cluster size; use 3 or 5"
        )),
    }
}

fn main() -> ExitCode {
    // Output piped into `head` ends the process quietly, as for other
    // command-line tools, instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE at start-up,
    // before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    if let Some(Command::Check { file }) = &args.command {
        return check_file(file);
    }
    if let Some(name) = &args.inject_bug
        && let Err(message) = check_bug_name(name)
    {
        eprintln!("error: --inject-bug {name:?}: {message}");
        return ExitCode::from(2);
    }
    match (args.seed, args.seeds) {
        (Some(seed), _) => replay(&args, seed),
        (None, Some(count)) => run_many(&args, count),
        (None, None) => {
            eprintln!(
                "error: give --seeds N to run seeds, --seed S to replay one, or `check FILE`\n\nFor more information, try '--help'."
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(feature = "bug-injection")]
fn check_bug_name(name: &str) -> Result<(), String> {
    use raft_core::bug_injection::Bug;
    match Bug::from_name(name) {
        Some(_) => Ok(()),
        None => {
            let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
            Err(format!("unknown bug; choose one of {}", names.join(", ")))
        }
    }
}

#[cfg(not(feature = "bug-injection"))]
fn check_bug_name(_name: &str) -> Result<(), String> {
    Err("this build has no bug injection; rebuild with `--features bug-injection`".to_owned())
}

fn options(args: &Args, seed: u64) -> SimOptions {
    let mut options = SimOptions::new(seed, args.nodes);
    options.fault_time = Duration::from_millis(args.fault_time);
    options.bug = args.inject_bug.clone();
    options
}

fn replay(args: &Args, seed: u64) -> ExitCode {
    let mut options = options(args, seed);
    options.trace = args.trace;
    let report = run_seed(&options);
    println!("{}", report.summary());
    println!("trace hash: {:016x}", report.trace_hash);
    match &report.result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            print_failure(&report, failure, !args.trace);
            ExitCode::from(1)
        }
    }
}

fn print_failure(report: &SeedReport, failure: &raft_sim::sim::Failure, tail: bool) {
    println!("seed {} failed: {failure}", report.seed);
    if tail {
        println!("last events of seed {}:", report.seed);
        for line in &report.trace_tail {
            println!("  {line}");
        }
    }
    println!(
        "replay with: raft-sim --seed {} --nodes {} --trace",
        report.seed, report.nodes
    );
}

fn run_many(args: &Args, count: u64) -> ExitCode {
    // Seeds report their own panics; the default hook would print each one
    // a second time.
    std::panic::set_hook(Box::new(|_| {}));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let next = AtomicU64::new(args.start);
    let end = args.start + count;
    let failures: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let simulated = AtomicU64::new(0);
    let started = Instant::now();

    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_seed(&options(args, seed));
                    simulated.fetch_add(report.simulated.as_millis() as u64, Ordering::Relaxed);
                    if args.verbose || report.result.is_err() {
                        println!("{}", report.summary());
                    }
                    if report.result.is_err() {
                        failures
                            .lock()
                            .expect("no thread panics holding it")
                            .push(report);
                    }
                }
            });
        }
    });

    let wall = started.elapsed();
    let mut failures = failures.into_inner().expect("no thread panics holding it");
    failures.sort_by_key(|report| report.seed);
    for report in &failures {
        if let Err(failure) = &report.result {
            print_failure(report, failure, true);
        }
    }
    let simulated = Duration::from_millis(simulated.load(Ordering::Relaxed));
    println!(
        "seeds={count} failed={} nodes={} start={} simulated={:.0}s wall={:.1}s speed={:.1}x seeds_per_minute={:.0}",
        failures.len(),
        args.nodes,
        args.start,
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        count as f64 * 60.0 / wall.as_secs_f64().max(1e-9)
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check_file(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let events = match raft_sim::history::parse_jsonl(&text) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("error: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    match raft_sim::linearizability::check(&events) {
        raft_sim::linearizability::CheckResult::Linearizable => {
            println!("linearizable");
            ExitCode::SUCCESS
        }
        raft_sim::linearizability::CheckResult::NotLinearizable(report) => {
            println!("not linearizable\n{report}");
            ExitCode::from(1)
        }
        raft_sim::linearizability::CheckResult::Unknown { key, reason } => {
            println!("unknown: key {key}: {reason}");
            ExitCode::from(1)
        }
    }
}

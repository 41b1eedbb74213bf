//! `raftctl`: the command line of raftd clusters.

mod output;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use raftctl::{Client, ClientError};

/// Exit status when the command succeeded.
const EXIT_OK: u8 = 0;
/// Exit status when the cluster could not serve the request.
const EXIT_FAILED: u8 = 1;
/// Exit status on invalid usage, as clap uses for the errors it finds.
const EXIT_USAGE: u8 = 2;
/// Exit status when `get` found no value for the key.
const EXIT_NOT_FOUND: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "raftctl",
    version,
    about = "Read and write a raftd cluster, and show its members' status.",
    after_help = "Exit status: 0 on success, 1 when the cluster did not serve the request \
(no leader within --timeout, connection or server error), 2 on invalid usage, \
3 when `get` finds no value for the key."
)]
struct Args {
    /// Client addresses of the cluster's nodes, HOST:PORT separated by commas.
    /// The default matches `raftd local`.
    #[arg(
        long,
        env = "RAFTCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003",
        value_parser = parse_endpoint
    )]
    endpoints: Vec<String>,

    /// Time a command waits for a leader to answer, with a unit: 500ms, 5s, 1m.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Table)]
    write_out: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to VALUE. Prints OK once the write is committed.
    Put { key: String, value: String },
    /// Print the value of KEY (a linearizable read). Exits with status 3 when
    /// the key has no value.
    Get { key: String },
    /// Delete KEY. Prints the number of keys deleted: 1, or 0 when the key
    /// had no value.
    Del { key: String },
    /// Show each endpoint's id, role, term, leader, commit index and applied
    /// index. An endpoint that does not answer is shown with its error.
    Status,
    /// Hand leadership to node ID and wait until it leads. Writes pause for
    /// at most an election timeout meanwhile. The node must be listed in
    /// --endpoints.
    MoveLeader { id: u64 },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut client = Client::new(args.endpoints.clone(), args.timeout);
    let mut stdout = std::io::stdout().lock();
    let result = smol::block_on(run(&args, &mut client, &mut stdout));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_OK)
        }
        Err(Failure::Output(error)) => {
            eprintln!("raftctl: failed to write output: {error}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Client(error)) => {
            eprintln!("raftctl: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

enum Failure {
    Client(ClientError),
    Output(std::io::Error),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        Failure::Output(error)
    }
}

async fn run(args: &Args, client: &mut Client, out: &mut impl Write) -> Result<u8, Failure> {
    let json = args.write_out == Format::Json;
    if let Command::Put { key, .. } | Command::Get { key } | Command::Del { key } = &args.command
        && key.is_empty()
    {
        eprintln!("raftctl: invalid key \"\": keys must have at least one byte");
        return Ok(EXIT_USAGE);
    }
    match &args.command {
        Command::Put { key, value } => {
            let index = client.put(key.as_bytes(), value.as_bytes()).await?;
            if json {
                output::write_json(out, &serde_json::json!({ "key": key, "index": index }))?;
            } else {
                writeln!(out, "OK")?;
            }
        }
        Command::Get { key } => match client.get(key.as_bytes()).await? {
            Some(value) => {
                if json {
                    let value = String::from_utf8_lossy(&value);
                    output::write_json(out, &serde_json::json!({ "key": key, "value": value }))?;
                } else {
                    out.write_all(&value)?;
                    writeln!(out)?;
                }
            }
            None => {
                eprintln!("raftctl: key not found: {key:?}");
                return Ok(EXIT_NOT_FOUND);
            }
        },
        Command::Del { key } => {
            let deleted = u8::from(client.delete(key.as_bytes()).await?);
            if json {
                output::write_json(out, &serde_json::json!({ "key": key, "deleted": deleted }))?;
            } else {
                writeln!(out, "{deleted}")?;
            }
        }
        Command::MoveLeader { id } => {
            let status = client.move_leader(raft_core::NodeId(*id)).await?;
            if json {
                output::write_json(
                    out,
                    &serde_json::json!({ "leader_id": status.id, "term": status.term }),
                )?;
            } else {
                writeln!(
                    out,
                    "leadership moved to node {} in term {}",
                    status.id, status.term
                )?;
            }
        }
        Command::Status => {
            let mut rows = Vec::new();
            for endpoint in client.endpoints() {
                rows.push((endpoint.clone(), client.status(endpoint).await));
            }
            let answered = rows.iter().any(|(_, result)| result.is_ok());
            if json {
                output::write_status_json(out, &rows)?;
            } else {
                output::write_status_table(out, &rows)?;
            }
            if !answered {
                return Ok(EXIT_FAILED);
            }
        }
    }
    out.flush()?;
    Ok(EXIT_OK)
}

/// Checks that an endpoint is HOST:PORT with a port from 1 to 65535.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && matches!(port.parse::<u16>(), Ok(port) if port > 0)
    });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:4001"
        ))
    }
}

/// Parses a positive whole duration with a unit suffix: `ms`, `s` or `m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a number with a unit, such as 500ms, 5s or 1m")
    })?;
    if number == 0 {
        return Err(format!("invalid duration {text:?}: it must be above zero"));
    }
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ if unit.starts_with('.') => Err(format!(
            "invalid duration {text:?}: use a whole number with a smaller unit, such as 1500ms"
        )),
        _ => Err(format!(
            "invalid duration {text:?}: unknown unit {unit:?}, use ms, s or m"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_units_parsed() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn zero_and_fractional_durations_rejected() {
        assert!(parse_duration("0s").unwrap_err().contains("above zero"));
        assert!(parse_duration("1.5s").unwrap_err().contains("1500ms"));
    }

    #[test]
    fn malformed_endpoints_rejected() {
        assert!(parse_endpoint("127.0.0.1:4001").is_ok());
        assert!(parse_endpoint("[::1]:4001").is_ok());
        for bad in ["127.0.0.1", "127.0.0.1:70000", "", ":4001", "host:0"] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duration_without_unit_rejected() {
        assert!(parse_duration("5").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("invalid duration")
        );
    }
}

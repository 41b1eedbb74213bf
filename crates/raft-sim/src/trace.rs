//! The trace of one seed: the events a human needs to debug it, and a hash
//! of them that shows whether two runs of a seed did the same thing.

use std::time::Duration;

/// Lines kept for the failure report when the full trace is not printed.
const TAIL_LINES: usize = 60;

#[derive(Debug, Default)]
pub struct Trace {
    /// Print each line as it is recorded.
    pub echo: bool,
    lines: Vec<String>,
    hash: u64,
}

impl Trace {
    pub fn new(echo: bool) -> Trace {
        Trace {
            echo,
            lines: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    /// Records one event at virtual time `now`.
    pub fn record(&mut self, now: Duration, line: String) {
        let line = format!("{:>8.3}s {line}", now.as_secs_f64());
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            // FNV-1a, 64 bits.
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if self.echo {
            println!("{line}");
        }
        self.lines.push(line);
        if !self.echo && self.lines.len() > 4 * TAIL_LINES {
            self.lines.drain(..self.lines.len() - TAIL_LINES);
        }
    }

    /// The hash of every line recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The last lines recorded, for a failure report.
    pub fn tail(&self) -> &[String] {
        let start = self.lines.len().saturating_sub(TAIL_LINES);
        &self.lines[start..]
    }
}

//! Deterministic simulation of whole raftd clusters.
//!
//! A seed runs 3 or 5 real raftd nodes (driver, write-ahead log, key-value
//! state machine) on the in-memory network and simulated disks, in one
//! thread, with overlapping faults: message loss, duplication and delay,
//! partitions, connection resets, crashes that lose unsynced writes,
//! pauses, and clocks that run at different speeds. Safety checks run
//! after every step; a liveness phase and a linearizability check of the
//! clients' history end each seed. The same seed always runs the same way.

pub mod cluster;
pub mod disk;
pub mod history;
pub mod invariants;
pub mod linearizability;
pub mod rng;
pub mod sim;
pub mod trace;
pub mod workload;

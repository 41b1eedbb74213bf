//! raftd: a replicated key-value store on Raft.
//!
//! The daemon's pieces, usable as a library by tests and the simulator:
//! the node driver ([`node`]), its write-ahead log ([`wal`]), the
//! [`storage`] that writes the log off the event loop, the key-value state
//! machine ([`kv`]) and the membership flags ([`cluster`]).

pub mod cluster;
pub mod kv;
pub mod node;
pub mod reads;
pub mod storage;
pub mod wal;

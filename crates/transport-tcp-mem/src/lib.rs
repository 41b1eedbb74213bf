//! [`Transport`](transport::Transport) over an in-memory network with a
//! virtual clock, so that a test runs a whole cluster of real node drivers
//! in one thread, the same way on every run.
//!
//! A [`MemNetwork`] contains the listeners, connections and packets in flight
//! of every endpoint. Each node gets a [`MemTransport`]; a test acts as a
//! client through [`MemClient`]. Connections behave as on TCP: the
//! initiating side sends a handshake first, bytes on one connection arrive
//! in order after the network's latency, and a closed connection is seen by
//! both ends. Frames go through the real codec.
//!
//! The network changes only when an endpoint calls it or the test moves the
//! clock with [`MemNetwork::advance`]; there are no threads and no real
//! time. Seeded faults ([`Faults`]), cuts and partitions, connection resets
//! and node crashes (dropping a [`MemTransport`]) are applied as packets are
//! sent, so the same calls with the same seed give the same events.

mod accepted;
mod client;
mod initiated;
mod network;
mod transport;

pub use client::{MemClient, MemClientError};
pub use network::{Faults, MemNetwork};
pub use transport::MemTransport;

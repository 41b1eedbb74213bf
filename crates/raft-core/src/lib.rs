//! The Raft consensus algorithm as a deterministic state machine.
//!
//! There are no sockets, threads, clocks or files here. The caller feeds the
//! node time as [`RawNode::tick`], messages from peers as [`RawNode::step`]
//! and commands as [`RawNode::propose`], then takes a [`Ready`] that lists
//! the work those inputs produced:
//!
//! 1. persist `hard_state` and `entries` (one fsync covers both);
//! 2. send `messages`, which may depend on what was just persisted;
//! 3. apply `committed_entries` to the state machine, in order;
//! 4. call [`RawNode::advance`] to acknowledge the persisted entries.
//!
//! An entry counts toward commit on this node only after `advance` reports
//! it persisted, and a follower acknowledges an append only in a message of
//! the `Ready` that persists it.

pub mod base64_bytes;
#[cfg(feature = "bug-injection")]
pub mod bug_injection;
mod config;
mod election;
mod log;
mod message;
mod progress;
mod raft;
mod rand;
mod read;
mod ready;
mod replication;
mod types;

pub use config::{Config, ConfigError, ReadMode};
pub use message::{Message, MessageBody};
pub use raft::{LeaderError, ProposeError, RawNode, Status, StepError};
pub use ready::{ReadState, Ready};
pub use types::{Entry, EntryKind, HardState, LogIndex, NodeId, Role, Term};

#[cfg(test)]
mod tests;

/// Evaluates to whether a deliberate bug is switched on, and to `false`
/// unless the crate that uses it is built with its `bug-injection` feature.
#[macro_export]
#[doc(hidden)]
macro_rules! injected {
    ($bug:ident) => {{
        #[cfg(feature = "bug-injection")]
        let on = $crate::bug_injection::enabled($crate::bug_injection::Bug::$bug);
        #[cfg(not(feature = "bug-injection"))]
        let on = false;
        on
    }};
}

use crate::types::NodeId;

/// Settings of one Raft node. Times are counted in ticks; the caller decides
/// how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Every voting member, this node included.
    pub voters: Vec<NodeId>,
    /// Minimum election timeout in ticks. Each node draws its timeout at
    /// random from `[election_tick, 2 * election_tick)` every time it resets
    /// its election timer, so that split votes resolve.
    pub election_tick: u32,
    /// Ticks between heartbeats from a leader.
    pub heartbeat_tick: u32,
    /// Maximum entries in one AppendEntries message.
    pub max_entries_per_append: usize,
    /// Maximum total entry size in one AppendEntries message, in bytes
    /// (estimated by [`Entry::size`](crate::Entry::size)). A single larger
    /// entry is still sent alone.
    pub max_bytes_per_append: usize,
    /// Maximum AppendEntries messages in flight to one follower in the
    /// replicate state.
    pub max_inflight_appends: usize,
    /// Maximum bytes of entries in flight to one follower in the replicate
    /// state (estimated by [`Entry::size`](crate::Entry::size)).
    pub max_inflight_bytes: usize,
    /// Seed of the random source for election timeouts. Give each node a
    /// different seed.
    pub seed: u64,
    /// Run a pre-vote before each election, so that a node that cannot win
    /// never raises its term.
    pub pre_vote: bool,
    /// Make a leader step down when it has not heard from a quorum within
    /// an election timeout, and make nodes that heard from a leader within
    /// an election timeout reject votes (leader stickiness).
    pub check_quorum: bool,
    /// How linearizable reads confirm leadership.
    pub read_mode: ReadMode,
}

/// How [`RawNode::read_index`](crate::RawNode::read_index) confirms that
/// the leader still leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// A heartbeat round acknowledged by a quorum, after the read arrived.
    Safe,
    /// A lease: no round when a quorum acknowledged a heartbeat sent within
    /// the last `election_tick - 2` ticks. Followers that acknowledged it
    /// reject votes until an election timeout passes on their clock, so the
    /// lease holds while no node's clock runs more than `2 / election_tick`
    /// (20% at 10 ticks) slower than the leader's. Needs `check_quorum`.
    Lease,
}

/// A [`Config`] field with a value the node cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id 0 is reserved, use ids from 1")]
    ZeroId,
    #[error("node {0} is not in the voter list")]
    NotAVoter(NodeId),
    #[error("node {0} appears more than once in the voter list")]
    DuplicateVoter(NodeId),
    #[error("heartbeat_tick must be at least 1")]
    ZeroHeartbeat,
    #[error(
        "election_tick ({election_tick}) must be greater than heartbeat_tick ({heartbeat_tick})"
    )]
    ElectionTooShort {
        election_tick: u32,
        heartbeat_tick: u32,
    },
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error(
        "lease reads need check_quorum, which keeps followers from voting while the lease lasts"
    )]
    LeaseWithoutCheckQuorum,
}

impl Config {
    /// A configuration with the default timing: a heartbeat every tick and
    /// an election timeout of 10 to 20 ticks.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_tick: 10,
            heartbeat_tick: 1,
            max_entries_per_append: 1024,
            max_bytes_per_append: 1024 * 1024,
            max_inflight_appends: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            seed: id.0,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// Returns the first field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.0 == 0 {
            return Err(ConfigError::ZeroId);
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        for (position, voter) in self.voters.iter().enumerate() {
            if voter.0 == 0 {
                return Err(ConfigError::ZeroId);
            }
            if self.voters[..position].contains(voter) {
                return Err(ConfigError::DuplicateVoter(*voter));
            }
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionTooShort {
                election_tick: self.election_tick,
                heartbeat_tick: self.heartbeat_tick,
            });
        }
        if self.max_entries_per_append == 0 {
            return Err(ConfigError::ZeroLimit("max_entries_per_append"));
        }
        if self.max_bytes_per_append == 0 {
            return Err(ConfigError::ZeroLimit("max_bytes_per_append"));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::ZeroLimit("max_inflight_appends"));
        }
        if self.max_inflight_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_inflight_bytes"));
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        Ok(())
    }

    /// Votes needed to win an election or commit an entry.
    pub(crate) fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

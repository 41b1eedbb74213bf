//! Client reads served through ReadIndex: each read waits for the Raft core
//! to confirm a read index, then for the state machine to apply it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft_core::{LogIndex, ReadState};
use transport::{ConnId, RequestId};

/// Time a read may wait for its read index and its apply before it fails,
/// for example when the leader's reply was lost.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A client read in progress.
#[derive(Debug)]
pub struct PendingRead {
    pub conn: ConnId,
    pub id: RequestId,
    pub key: Vec<u8>,
    started: Instant,
}

/// Reads waiting for their read index, then for the state machine.
#[derive(Debug, Default)]
pub struct Reads {
    next_context: u64,
    /// Reads whose read index is not known yet, by context.
    unconfirmed: BTreeMap<u64, PendingRead>,
    /// Reads waiting for the state machine to apply their index.
    confirmed: BTreeMap<(LogIndex, u64), PendingRead>,
}

impl Reads {
    /// Registers a read and returns the context to pass to
    /// `RawNode::read_index`.
    pub fn start(&mut self, conn: ConnId, id: RequestId, key: Vec<u8>, now: Instant) -> u64 {
        self.next_context += 1;
        let context = self.next_context;
        let read = PendingRead {
            conn,
            id,
            key,
            started: now,
        };
        self.unconfirmed.insert(context, read);
        context
    }

    /// Forgets a read whose `read_index` call failed.
    pub fn cancel(&mut self, context: u64) -> Option<PendingRead> {
        self.unconfirmed.remove(&context)
    }

    /// Records a read result from the core. Returns the read when it
    /// failed: leadership could not be confirmed.
    pub fn confirm(&mut self, state: ReadState) -> Option<PendingRead> {
        let read = self.unconfirmed.remove(&state.context)?;
        match state.index {
            Some(index) => {
                self.confirmed.insert((index, state.context), read);
                None
            }
            None => Some(read),
        }
    }

    /// Takes the confirmed reads whose index the state machine has applied.
    pub fn servable(&mut self, applied: LogIndex) -> Vec<PendingRead> {
        let later = self.confirmed.split_off(&(applied.next(), 0));
        let ready = std::mem::replace(&mut self.confirmed, later);
        ready.into_values().collect()
    }

    /// Takes the reads older than [`READ_TIMEOUT`].
    pub fn expired(&mut self, now: Instant) -> Vec<PendingRead> {
        let is_old =
            |read: &PendingRead| now.saturating_duration_since(read.started) >= READ_TIMEOUT;
        let mut expired = Vec::new();
        let old: Vec<u64> = self
            .unconfirmed
            .iter()
            .filter(|(_, read)| is_old(read))
            .map(|(context, _)| *context)
            .collect();
        for context in old {
            expired.extend(self.unconfirmed.remove(&context));
        }
        let old: Vec<(LogIndex, u64)> = self
            .confirmed
            .iter()
            .filter(|(_, read)| is_old(read))
            .map(|(key, _)| *key)
            .collect();
        for key in old {
            expired.extend(self.confirmed.remove(&key));
        }
        expired
    }

    /// Forgets the reads of a closed connection.
    pub fn drop_connection(&mut self, conn: ConnId) {
        self.unconfirmed.retain(|_, read| read.conn != conn);
        self.confirmed.retain(|_, read| read.conn != conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(reads: &mut Reads, id: u64, now: Instant) -> u64 {
        reads.start(ConnId(1), RequestId(id), b"k".to_vec(), now)
    }

    #[test]
    fn read_served_once_index_applied() {
        let now = Instant::now();
        let mut reads = Reads::default();
        let context = read(&mut reads, 1, now);
        assert!(
            reads
                .confirm(ReadState {
                    context,
                    index: Some(LogIndex(5))
                })
                .is_none()
        );
        assert!(reads.servable(LogIndex(4)).is_empty());
        let served = reads.servable(LogIndex(5));
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].id, RequestId(1));
        assert!(reads.servable(LogIndex(9)).is_empty());
    }

    #[test]
    fn unconfirmed_read_fails() {
        let now = Instant::now();
        let mut reads = Reads::default();
        let context = read(&mut reads, 1, now);
        let failed = reads
            .confirm(ReadState {
                context,
                index: None,
            })
            .unwrap();
        assert_eq!(failed.id, RequestId(1));
        assert!(reads.servable(LogIndex(100)).is_empty());
    }

    #[test]
    fn old_reads_expire() {
        let now = Instant::now();
        let mut reads = Reads::default();
        read(&mut reads, 1, now);
        let context = read(&mut reads, 2, now);
        reads.confirm(ReadState {
            context,
            index: Some(LogIndex(3)),
        });
        assert!(reads.expired(now + Duration::from_secs(1)).is_empty());
        assert_eq!(reads.expired(now + READ_TIMEOUT).len(), 2);
    }
}

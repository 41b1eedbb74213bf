//! The requests sent to one peer that still wait for their response: their
//! attempts, deadlines and order.
//!
//! A request gets `max_attempts` attempts of `request_timeout` each. An
//! attempt starts when the request is written on a handshaken connection.
//! When an attempt times out, the request is written again on the same
//! connection with the same id while attempts remain, and fails otherwise.
//! When the connection breaks, requests with attempts left wait for the
//! next connection, and those on their last attempt fail. A request that
//! waits for a connection fails once the time of its remaining attempts has
//! passed, so a peer that cannot be reached fails requests after
//! `max_attempts * request_timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{RequestId, TransportConfig};

/// One request and its encoded frame, kept for resending.
#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    /// Attempts started so far, at most `max_attempts`.
    attempts: u32,
    /// In flight: the end of the current attempt. Queued: when the request
    /// fails unless a connection takes it first.
    deadline: Instant,
}

/// The requests to one peer that have no response yet.
#[derive(Debug)]
pub struct Requests {
    timeout: Duration,
    max_attempts: u32,
    max_queued: usize,
    /// Requests waiting for a handshaken connection. Request ids grow with
    /// every send, so the map keeps them in send order.
    queued: BTreeMap<RequestId, Pending>,
    /// Requests written on the current connection.
    in_flight: BTreeMap<RequestId, Pending>,
}

/// The outcome of [`Requests::expire`].
#[derive(Debug, Default)]
pub struct Expired {
    /// Requests that used all their attempts or waited too long for a
    /// connection.
    pub failed: Vec<RequestId>,
    /// Whether a request written on the current connection failed, which
    /// suggests that the connection is dead without having been closed.
    pub in_flight_failed: bool,
}

impl Requests {
    pub fn new(config: &TransportConfig) -> Requests {
        Requests {
            timeout: config.request_timeout,
            max_attempts: config.max_attempts.max(1),
            max_queued: config.max_queued_requests,
            queued: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_empty()
    }

    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Queues an encoded request until a connection takes it. Returns false,
    /// and drops the request, when `max_queued_requests` requests already
    /// wait for a response.
    pub fn push(&mut self, id: RequestId, bytes: Vec<u8>, now: Instant) -> bool {
        if self.queued.len() + self.in_flight.len() >= self.max_queued {
            return false;
        }
        let pending = Pending {
            bytes,
            attempts: 0,
            deadline: now + self.timeout * self.max_attempts,
        };
        self.queued.insert(id, pending);
        true
    }

    /// Starts an attempt for every queued request, in send order, and
    /// passes each frame to `write`.
    pub fn write_queued(&mut self, now: Instant, mut write: impl FnMut(&[u8])) {
        let queued = std::mem::take(&mut self.queued);
        for (id, mut pending) in queued {
            pending.attempts += 1;
            pending.deadline = now + self.timeout;
            write(&pending.bytes);
            self.in_flight.insert(id, pending);
        }
    }

    /// Records the response to `id`. Returns false when `id` is not in
    /// flight, which makes the response a duplicate from a retry or a late
    /// response to a request that already failed.
    pub fn complete(&mut self, id: RequestId) -> bool {
        self.in_flight.remove(&id).is_some()
    }

    /// Moves the requests of a broken connection back to the queue, and
    /// returns those that were on their last attempt, which fail.
    pub fn connection_lost(&mut self, now: Instant) -> Vec<RequestId> {
        let mut failed = Vec::new();
        let in_flight = std::mem::take(&mut self.in_flight);
        for (id, mut pending) in in_flight {
            let remaining = self.max_attempts.saturating_sub(pending.attempts);
            if remaining == 0 {
                failed.push(id);
                continue;
            }
            pending.deadline = now + self.timeout * remaining;
            self.queued.insert(id, pending);
        }
        failed
    }

    /// Handles the deadlines that passed by `now`. In-flight requests with
    /// attempts left start their next attempt, and their frames are passed
    /// to `resend` for the current connection. Every other late request
    /// fails.
    pub fn expire(&mut self, now: Instant, mut resend: impl FnMut(&[u8])) -> Expired {
        let mut expired = Expired::default();
        let late: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(pending) = self.in_flight.get_mut(&id) else {
                continue;
            };
            if pending.attempts >= self.max_attempts {
                self.in_flight.remove(&id);
                expired.failed.push(id);
                expired.in_flight_failed = true;
            } else {
                pending.attempts += 1;
                pending.deadline = now + self.timeout;
                resend(&pending.bytes);
            }
        }

        let late: Vec<RequestId> = self
            .queued
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.queued.remove(&id);
            expired.failed.push(id);
        }
        expired.failed.sort();
        expired
    }

    /// Returns the earliest deadline of any request.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .chain(self.queued.values())
            .map(|pending| pending.deadline)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use crate::PeerAddr;
    use raft_core::NodeId;

    use super::*;

    fn requests(max_attempts: u32, max_queued: usize) -> Requests {
        let members = vec![PeerAddr {
            id: NodeId(1),
            addr: "a".to_owned(),
        }];
        let mut config = TransportConfig::new(NodeId(1), "c".to_owned(), members);
        config.request_timeout = Duration::from_millis(100);
        config.max_attempts = max_attempts;
        config.max_queued_requests = max_queued;
        Requests::new(&config)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn in_flight_request_resent_then_failed() {
        let start = Instant::now();
        let mut requests = requests(2, 10);
        assert!(requests.push(RequestId(1), vec![1], start));
        let mut out = Vec::new();
        requests.write_queued(start, |bytes| out.extend_from_slice(bytes));
        assert_eq!(out, vec![1]);

        let mut resend = Vec::new();
        let expired = requests.expire(start + 100 * MS, |bytes| resend.extend_from_slice(bytes));
        assert!(expired.failed.is_empty());
        assert_eq!(resend, vec![1]);

        let expired = requests.expire(start + 199 * MS, |bytes| resend.extend_from_slice(bytes));
        assert!(expired.failed.is_empty());
        let expired = requests.expire(start + 200 * MS, |bytes| resend.extend_from_slice(bytes));
        assert_eq!(expired.failed, vec![RequestId(1)]);
        assert!(expired.in_flight_failed);
        assert!(requests.is_empty());
    }

    #[test]
    fn duplicate_response_not_completed_twice() {
        let start = Instant::now();
        let mut requests = requests(2, 10);
        requests.push(RequestId(1), vec![1], start);
        requests.write_queued(start, |_| {});
        assert!(requests.complete(RequestId(1)));
        assert!(!requests.complete(RequestId(1)));
    }

    #[test]
    fn queued_request_fails_after_all_attempts_time() {
        let start = Instant::now();
        let mut requests = requests(3, 10);
        requests.push(RequestId(1), vec![1], start);
        let expired = requests.expire(start + 299 * MS, |_| {});
        assert!(expired.failed.is_empty());
        assert_eq!(requests.next_deadline(), Some(start + 300 * MS));
        let expired = requests.expire(start + 300 * MS, |_| {});
        assert_eq!(expired.failed, vec![RequestId(1)]);
        assert!(!expired.in_flight_failed);
    }

    #[test]
    fn lost_connection_requeues_requests_with_attempts_left() {
        let start = Instant::now();
        let mut requests = requests(2, 10);
        requests.push(RequestId(1), vec![1], start);
        requests.write_queued(start, |_| {});
        requests.expire(start + 100 * MS, |_| {});
        requests.push(RequestId(2), vec![2], start + 110 * MS);
        requests.write_queued(start + 110 * MS, |_| {});

        // Request 1 is on its last attempt; request 2 has one left.
        let failed = requests.connection_lost(start + 120 * MS);
        assert_eq!(failed, vec![RequestId(1)]);
        assert!(requests.has_queued());
        let mut out = Vec::new();
        requests.write_queued(start + 130 * MS, |bytes| out.extend_from_slice(bytes));
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn requeued_request_gets_time_of_remaining_attempts() {
        let start = Instant::now();
        let mut requests = requests(3, 10);
        requests.push(RequestId(1), vec![1], start);
        requests.write_queued(start, |_| {});
        requests.expire(start + 100 * MS, |_| {});

        // Attempt 2 of 3 is under way, so one attempt of 100 ms remains.
        let failed = requests.connection_lost(start + 150 * MS);
        assert!(failed.is_empty());
        assert_eq!(requests.next_deadline(), Some(start + 250 * MS));
        let expired = requests.expire(start + 250 * MS, |_| {});
        assert_eq!(expired.failed, vec![RequestId(1)]);
        assert!(requests.is_empty());
    }

    #[test]
    fn full_queue_rejects_request() {
        let start = Instant::now();
        let mut requests = requests(2, 2);
        assert!(requests.push(RequestId(1), vec![1], start));
        assert!(requests.push(RequestId(2), vec![2], start));
        requests.write_queued(start, |_| {});
        assert!(!requests.push(RequestId(3), vec![3], start));
        requests.complete(RequestId(1));
        assert!(requests.push(RequestId(3), vec![3], start));
    }
}

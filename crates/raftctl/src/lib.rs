//! The client library of raftd clusters, used by `raftctl`, by tests and by
//! benchmarks.
//!
//! A [`Client`] keeps one connection to the node it believes leads, follows
//! not-leader replies to the leader's client address, and retries on other
//! endpoints until its timeout runs out. Calls are async; run them on any
//! executor, for example with [`smol::block_on`].

mod connection;
mod error;

use std::time::{Duration, Instant};

use raft_core::{LogIndex, NodeId};
use transport::{ClientErrorKind, ClientRequest, ClientResponse, NodeStatus};

pub use connection::Connection;
pub use error::ClientError;

/// Pause before retrying after a node reported that it has no leader, or
/// that leadership changed under a request.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A client of one cluster.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    timeout: Duration,
    /// The open connection, to the leader as far as the client knows.
    connection: Option<Connection>,
    /// Where to send the next request: an endpoint or a redirect target.
    target: String,
}

impl Client {
    /// Creates a client for a cluster reachable at `endpoints` (client
    /// addresses, `HOST:PORT`). Each request gives up after `timeout`. No
    /// connection is opened until the first request.
    ///
    /// # Panics
    ///
    /// Panics when `endpoints` is empty.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Client {
        assert!(
            !endpoints.is_empty(),
            "a client needs at least one endpoint"
        );
        Client {
            target: endpoints[0].clone(),
            endpoints,
            timeout,
            connection: None,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Sets `key` to `value`. Returns the log index of the write once it is
    /// committed and applied.
    ///
    /// # Errors
    ///
    /// Returns [`ClientError::NoLeader`] when no leader accepted the write
    /// within the timeout; the write may or may not have taken effect.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<LogIndex, ClientError> {
        let request = ClientRequest::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        match self.request(request).await? {
            ClientResponse::Written { index } => Ok(index),
            other => Err(self.unexpected(other)),
        }
    }

    /// Reads `key` linearizably. Returns `None` when the key is absent.
    ///
    /// # Errors
    ///
    /// As [`Client::put`].
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let request = ClientRequest::Get { key: key.to_vec() };
        match self.request(request).await? {
            ClientResponse::Value { value } => Ok(value),
            other => Err(self.unexpected(other)),
        }
    }

    /// Deletes `key`. Returns whether it had a value.
    ///
    /// # Errors
    ///
    /// As [`Client::put`].
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, ClientError> {
        let request = ClientRequest::Delete { key: key.to_vec() };
        match self.request(request).await? {
            ClientResponse::Deleted { existed, .. } => Ok(existed),
            other => Err(self.unexpected(other)),
        }
    }

    /// Sets `key` to `value` if its current value is `expected` (`None`: the
    /// key is absent). Returns whether it swapped and the value it found.
    ///
    /// # Errors
    ///
    /// As [`Client::put`].
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(bool, Option<Vec<u8>>), ClientError> {
        let request = ClientRequest::Cas {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            value: value.to_vec(),
        };
        match self.request(request).await? {
            ClientResponse::Swapped {
                succeeded, current, ..
            } => Ok((succeeded, current)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the leader to hand leadership to node `target`, then waits until
    /// an endpoint reports `target` as leader. Returns the new leader's
    /// status.
    ///
    /// # Errors
    ///
    /// Returns [`ClientError::NoLeader`] when no leader accepted the request,
    /// and [`ClientError::TransferTimedOut`] when `target` did not take over
    /// within the timeout.
    pub async fn move_leader(&mut self, target: NodeId) -> Result<NodeStatus, ClientError> {
        let deadline = Instant::now() + self.timeout;
        match self.request(ClientRequest::MoveLeader { target }).await? {
            ClientResponse::TransferStarted { .. } => {}
            other => return Err(self.unexpected(other)),
        }
        while Instant::now() < deadline {
            for endpoint in self.endpoints.clone() {
                if let Ok(status) = self.status(&endpoint).await
                    && status.id == target
                    && status.leader_id == Some(target)
                {
                    self.switch_target(endpoint);
                    return Ok(status);
                }
            }
            pause(RETRY_PAUSE, deadline).await;
        }
        Err(ClientError::TransferTimedOut {
            target,
            timeout: self.timeout,
        })
    }

    /// Asks one endpoint for its own status, without following the leader.
    ///
    /// # Errors
    ///
    /// Returns an error when the endpoint does not answer within the timeout.
    pub async fn status(&self, endpoint: &str) -> Result<NodeStatus, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut connection = Connection::open(endpoint, deadline).await?;
        match connection.call(ClientRequest::Status, deadline).await? {
            ClientResponse::Status(status) => Ok(status),
            other => Err(ClientError::UnexpectedResponse {
                endpoint: endpoint.to_owned(),
                response: format!("{other:?}"),
            }),
        }
    }

    /// Sends `request` to the leader, following redirects and retrying on
    /// other endpoints until the timeout. Returns the leader's response,
    /// which is never [`ClientResponse::NotLeader`] or an
    /// [`ClientErrorKind::Unavailable`] error.
    ///
    /// # Errors
    ///
    /// Returns [`ClientError::NoLeader`] with the last failure when the
    /// timeout runs out, and [`ClientError::Server`] at once for errors that
    /// a retry cannot fix.
    pub async fn request(&mut self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut next_endpoint = 0;
        let mut last_error: Option<ClientError> = None;

        while Instant::now() < deadline {
            // A node that accepts connections but does not answer (stopped,
            // or cut off from its peers) must not use up the whole timeout.
            let attempt_deadline = deadline.min(Instant::now() + self.attempt_timeout());
            let result = self.call_target(request.clone(), attempt_deadline).await;
            match result {
                Ok(ClientResponse::NotLeader {
                    leader_client_addr: Some(leader),
                    ..
                }) if leader != self.target => {
                    self.switch_target(leader);
                }
                Ok(ClientResponse::NotLeader { leader_id, .. }) => {
                    last_error = Some(ClientError::NotLeader {
                        endpoint: self.target.clone(),
                        leader_id,
                    });
                    self.switch_target(self.endpoints[next_endpoint].clone());
                    next_endpoint = (next_endpoint + 1) % self.endpoints.len();
                    pause(RETRY_PAUSE, deadline).await;
                }
                Ok(ClientResponse::Error {
                    kind: ClientErrorKind::Unavailable,
                    message,
                }) => {
                    last_error = Some(ClientError::Server {
                        endpoint: self.target.clone(),
                        kind: ClientErrorKind::Unavailable,
                        message,
                    });
                    pause(RETRY_PAUSE, deadline).await;
                }
                Ok(ClientResponse::Error { kind, message }) => {
                    return Err(ClientError::Server {
                        endpoint: self.target.clone(),
                        kind,
                        message,
                    });
                }
                Ok(response) => return Ok(response),
                Err(error) => {
                    last_error = Some(error);
                    self.switch_target(self.endpoints[next_endpoint].clone());
                    next_endpoint = (next_endpoint + 1) % self.endpoints.len();
                    pause(RETRY_PAUSE, deadline).await;
                }
            }
        }
        Err(ClientError::NoLeader {
            timeout: self.timeout,
            last_error: last_error.map(Box::new),
        })
    }

    async fn call_target(
        &mut self,
        request: ClientRequest,
        deadline: Instant,
    ) -> Result<ClientResponse, ClientError> {
        if self.connection.is_none() {
            self.connection = Some(Connection::open(&self.target, deadline).await?);
        }
        let connection = self.connection.as_mut().expect("opened above");
        let result = connection.call(request, deadline).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// The time one attempt on one node may take: a third of the timeout,
    /// within 200 ms to 2 s.
    fn attempt_timeout(&self) -> Duration {
        (self.timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    fn switch_target(&mut self, target: String) {
        if target != self.target {
            self.connection = None;
            self.target = target;
        }
    }

    fn unexpected(&self, response: ClientResponse) -> ClientError {
        ClientError::UnexpectedResponse {
            endpoint: self.target.clone(),
            response: format!("{response:?}"),
        }
    }
}

/// Sleeps for `duration`, or until `deadline` if that comes first.
async fn pause(duration: Duration, deadline: Instant) {
    let until = (Instant::now() + duration).min(deadline);
    async_io::Timer::at(until).await;
}

//! Simulated clients: put, get, delete and compare-and-swap on a few hot
//! keys, with timeouts and redirects, recording every operation's
//! invocation and completion as Jepsen-style history events.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_core::NodeId;
use serde_json::{Value, json};
use transport::{ClientErrorKind, ClientRequest, ClientResponse, RequestId};
use transport_tcp_mem::{MemClient, MemNetwork};

use crate::cluster::client_addr;
use crate::rng::Rng;

/// The keys every client works on, so that operations contend.
pub const KEYS: [&str; 3] = ["x", "y", "z"];
/// Time a client waits for a response before it records the operation as
/// indeterminate.
pub const OP_TIMEOUT: Duration = Duration::from_millis(400);
/// Redirects and retries one operation may take before it gives up.
const MAX_TRIES: u32 = 8;

/// One line of the recorded history, in Jepsen's event format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    pub process: u64,
    pub kind: &'static str,
    pub f: &'static str,
    pub key: &'static str,
    pub value: Value,
}

impl HistoryLine {
    pub fn to_json(&self) -> String {
        json!({
            "process": self.process,
            "type": self.kind,
            "f": self.f,
            "key": self.key,
            "value": self.value,
        })
        .to_string()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Read,
    Write(String),
    Delete,
    Cas(Option<String>, String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write(_) => "write",
            Op::Delete => "delete",
            Op::Cas(..) => "cas",
        }
    }

    fn invoke_value(&self) -> Value {
        match self {
            Op::Read | Op::Delete => Value::Null,
            Op::Write(value) => json!(value),
            Op::Cas(expected, new) => json!([expected, new]),
        }
    }

    fn request(&self, key: &str) -> ClientRequest {
        let key = key.as_bytes().to_vec();
        match self {
            Op::Read => ClientRequest::Get { key },
            Op::Write(value) => ClientRequest::Put {
                key,
                value: value.clone().into_bytes(),
            },
            Op::Delete => ClientRequest::Delete { key },
            Op::Cas(expected, new) => ClientRequest::Cas {
                key,
                expected: expected.clone().map(String::into_bytes),
                value: new.clone().into_bytes(),
            },
        }
    }
}

struct Pending {
    op: Op,
    key: &'static str,
    node: NodeId,
    request: RequestId,
    /// When to retry a redirect that named no leader.
    retry_at: Option<Duration>,
    deadline: Duration,
    tries: u32,
}

struct SimClient {
    index: u64,
    /// The Jepsen process id. A client whose operation timed out takes a new
    /// one, since that operation may still take effect later.
    process: u64,
    leader_guess: NodeId,
    connections: BTreeMap<NodeId, MemClient>,
    pending: Option<Pending>,
    writes: u64,
}

/// The clients of one seed and the history they record.
pub struct Workload {
    clients: Vec<SimClient>,
    cluster_size: u64,
    /// Chance per client per millisecond of starting an operation, in
    /// thousandths.
    rate_permille: u64,
    history: Vec<HistoryLine>,
    /// Operations completed ok, failed and indeterminate.
    pub counts: (u64, u64, u64),
    rng: Rng,
}

pub enum Completion {
    Ok(Value),
    Fail,
    Info,
}

impl Workload {
    pub fn new(clients: u64, cluster_size: u64, rate_permille: u64, rng: Rng) -> Workload {
        let clients = (0..clients)
            .map(|index| SimClient {
                index,
                process: index,
                leader_guess: NodeId(1 + index % cluster_size),
                connections: BTreeMap::new(),
                pending: None,
                writes: 0,
            })
            .collect();
        Workload {
            clients,
            cluster_size,
            rate_permille,
            history: Vec::new(),
            counts: (0, 0, 0),
            rng,
        }
    }

    pub fn history(&self) -> &[HistoryLine] {
        &self.history
    }

    pub fn is_idle(&self) -> bool {
        self.clients.iter().all(|client| client.pending.is_none())
    }

    /// Lets each client receive responses, time out, and start new
    /// operations while `generate` is true. Returns trace lines.
    pub fn step(&mut self, network: &MemNetwork, now: Duration, generate: bool) -> Vec<String> {
        let mut trace = Vec::new();
        for position in 0..self.clients.len() {
            self.poll_client(position, network, now, &mut trace);
            if generate
                && self.clients[position].pending.is_none()
                && self.rng.chance(self.rate_permille, 1000)
            {
                let op = self.next_op(position);
                let key = *self.rng.pick(&KEYS);
                self.invoke(position, op, key, network, now, &mut trace);
            }
        }
        trace
    }

    /// Starts a read of every key from one client, for the final check that
    /// acknowledged writes survived.
    pub fn read_all(&mut self, network: &MemNetwork, now: Duration) -> Vec<String> {
        let mut trace = Vec::new();
        for (position, key) in KEYS.iter().enumerate() {
            let position = position % self.clients.len();
            if self.clients[position].pending.is_none() {
                self.invoke(position, Op::Read, key, network, now, &mut trace);
            }
        }
        trace
    }

    fn next_op(&mut self, position: usize) -> Op {
        let client = &mut self.clients[position];
        client.writes += 1;
        let value = format!("c{}-{}", client.index, client.writes);
        match self.rng.range(0, 10) {
            0..=3 => Op::Read,
            4..=6 => Op::Write(value),
            7 => Op::Delete,
            _ => {
                let expected = if self.rng.chance(1, 4) {
                    None
                } else {
                    let other = self.rng.range(0, self.clients.len() as u64);
                    let count = self.rng.range(1, 4);
                    Some(format!("c{other}-{count}"))
                };
                Op::Cas(expected, value)
            }
        }
    }

    fn invoke(
        &mut self,
        position: usize,
        op: Op,
        key: &'static str,
        network: &MemNetwork,
        now: Duration,
        trace: &mut Vec<String>,
    ) {
        let client = &self.clients[position];
        let line = HistoryLine {
            process: client.process,
            kind: "invoke",
            f: op.name(),
            key,
            value: op.invoke_value(),
        };
        trace.push(format!(
            "client {} invoke {} {key} {}",
            client.process,
            op.name(),
            line.value
        ));
        self.history.push(line);
        let node = client.leader_guess;
        let pending = Pending {
            op,
            key,
            node,
            request: RequestId(0),
            retry_at: None,
            deadline: now + OP_TIMEOUT,
            tries: 0,
        };
        self.clients[position].pending = Some(pending);
        self.send(position, node, network, now);
    }

    /// Sends the client's pending operation to `node`, connecting first if
    /// needed. A node that is down gets the next try after a pause.
    fn send(&mut self, position: usize, node: NodeId, network: &MemNetwork, now: Duration) {
        let size = self.cluster_size;
        let client = &mut self.clients[position];
        let Some(pending) = client.pending.as_mut() else {
            return;
        };
        pending.node = node;
        pending.tries += 1;
        let connection = match client.connections.entry(node) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                match MemClient::connect(network, &client_addr(node)) {
                    Ok(connection) => entry.insert(connection),
                    Err(_) => {
                        // The node is down; try the next one a little later.
                        pending.node = NodeId(1 + node.0 % size);
                        pending.retry_at = Some(now + Duration::from_millis(20));
                        return;
                    }
                }
            }
        };
        let request = pending.op.request(pending.key);
        match connection.send(request) {
            Ok(id) => {
                pending.request = id;
                pending.retry_at = None;
            }
            Err(_) => {
                client.connections.remove(&node);
                pending.node = NodeId(1 + node.0 % size);
                pending.retry_at = Some(now + Duration::from_millis(20));
            }
        }
    }

    fn poll_client(
        &mut self,
        position: usize,
        network: &MemNetwork,
        now: Duration,
        trace: &mut Vec<String>,
    ) {
        let Some(pending) = self.clients[position].pending.as_ref() else {
            return;
        };
        let node = pending.node;
        let request = pending.request;
        if pending.deadline <= now || pending.tries > MAX_TRIES {
            self.complete(position, Completion::Info, trace);
            return;
        }
        if let Some(retry_at) = pending.retry_at {
            if retry_at <= now {
                self.send(position, node, network, now);
            }
            return;
        }

        let client = &mut self.clients[position];
        let responses = match client.connections.get_mut(&node) {
            Some(connection) => connection.poll(),
            None => Ok(Vec::new()),
        };
        let responses = match responses {
            Ok(responses) => responses,
            Err(_) => {
                // The node closed the connection (it crashed): the request
                // may or may not have been proposed.
                client.connections.remove(&node);
                self.complete(position, Completion::Info, trace);
                return;
            }
        };
        let Some((_, response)) = responses.into_iter().find(|(id, _)| *id == request) else {
            return;
        };
        let size = self.cluster_size;
        let pending = self.clients[position]
            .pending
            .as_mut()
            .expect("checked above");
        let completion = match (response, &pending.op) {
            (ClientResponse::NotLeader { leader_id, .. }, _) => {
                // Not proposed at all, so sending it elsewhere is the same
                // operation.
                let next = leader_id
                    .filter(|leader| *leader != node)
                    .unwrap_or(NodeId(1 + node.0 % size));
                self.clients[position].leader_guess = next;
                if leader_id.is_some_and(|leader| leader != node) {
                    self.send(position, next, network, now);
                } else {
                    let pending = self.clients[position].pending.as_mut().expect("pending");
                    pending.node = next;
                    pending.retry_at = Some(now + Duration::from_millis(20));
                }
                return;
            }
            (ClientResponse::Written { .. }, Op::Write(_))
            | (ClientResponse::Deleted { .. }, Op::Delete) => Completion::Ok(Value::Null),
            (ClientResponse::Value { value }, Op::Read) => {
                Completion::Ok(value.map_or(Value::Null, |bytes| {
                    Value::String(String::from_utf8_lossy(&bytes).into_owned())
                }))
            }
            (ClientResponse::Swapped { succeeded, .. }, Op::Cas(..)) => {
                if succeeded {
                    Completion::Ok(Value::Null)
                } else {
                    Completion::Fail
                }
            }
            (
                ClientResponse::Error {
                    kind: ClientErrorKind::InvalidRequest,
                    ..
                },
                _,
            ) => Completion::Fail,
            _ => Completion::Info,
        };
        self.clients[position].leader_guess = node;
        self.complete(position, completion, trace);
    }

    fn complete(&mut self, position: usize, completion: Completion, trace: &mut Vec<String>) {
        let client_count = self.clients.len() as u64;
        let client = &mut self.clients[position];
        let pending = client.pending.take().expect("an operation is pending");
        let (kind, value) = match completion {
            Completion::Ok(value) => {
                self.counts.0 += 1;
                let value = match &pending.op {
                    Op::Read => value,
                    other => other.invoke_value(),
                };
                ("ok", value)
            }
            Completion::Fail => {
                self.counts.1 += 1;
                ("fail", pending.op.invoke_value())
            }
            Completion::Info => {
                self.counts.2 += 1;
                ("info", pending.op.invoke_value())
            }
        };
        trace.push(format!(
            "client {} {kind} {} {} {value}",
            client.process,
            pending.op.name(),
            pending.key
        ));
        self.history.push(HistoryLine {
            process: client.process,
            kind,
            f: pending.op.name(),
            key: pending.key,
            value,
        });
        if kind == "info" {
            client.process += client_count;
            // The old connection may still deliver the late response.
            client.connections.clear();
        }
    }
}

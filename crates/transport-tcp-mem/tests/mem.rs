//! The in-memory network behaves like the TCP transport, on a virtual clock.

use std::time::Duration;

use raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use transport::{ClientRequest, ClientResponse, Event, PeerAddr, Transport, TransportConfig};
use transport_tcp_mem::{MemClient, MemClientError, MemNetwork, MemTransport};

fn config(id: u64, cluster: &str) -> TransportConfig {
    let members = (1..=2)
        .map(|member| PeerAddr {
            id: NodeId(member),
            addr: format!("node-{member}:peer"),
        })
        .collect();
    let mut config = TransportConfig::new(NodeId(id), cluster.to_owned(), members);
    config.request_timeout = Duration::from_millis(100);
    config.max_attempts = 2;
    config
}

fn node(network: &MemNetwork, id: u64, cluster: &str) -> MemTransport {
    MemTransport::new(network, config(id, cluster), &format!("node-{id}:client")).unwrap()
}

fn vote_request() -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
        },
    }
}

/// Polls every transport each virtual millisecond for `millis` ms, and
/// answers every peer request with a granted vote.
fn run(network: &MemNetwork, nodes: &mut [&mut MemTransport], millis: u64) -> Vec<(usize, Event)> {
    let mut log = Vec::new();
    for _ in 0..millis {
        for (index, node) in nodes.iter_mut().enumerate() {
            let mut events = Vec::new();
            node.poll(&mut events, None).unwrap();
            for event in events {
                if let Event::PeerRequest { conn, id, .. } = &event {
                    let response = Message {
                        from: NodeId(2),
                        to: NodeId(1),
                        term: Term(1),
                        body: MessageBody::RequestVoteResponse { granted: true },
                    };
                    node.respond_peer(*conn, *id, response).unwrap();
                }
                log.push((index, event));
            }
        }
        network.advance(Duration::from_millis(1));
    }
    log
}

#[test]
fn request_answered_over_memory_network() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    let id = one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 20);
    let responses: Vec<_> = log
        .iter()
        .filter(|(_, event)| matches!(event, Event::PeerResponse { .. }))
        .collect();
    assert_eq!(responses.len(), 1);
    assert!(matches!(
        &responses[0].1,
        Event::PeerResponse { peer: NodeId(2), id: response_id, .. } if *response_id == id
    ));
}

#[test]
fn request_to_absent_peer_fails_after_attempts() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let id = one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one], 150);
    assert!(log.is_empty(), "failed too early: {log:?}");
    let log = run(&network, &mut [&mut one], 100);
    assert_eq!(
        log,
        vec![(
            0,
            Event::RequestFailed {
                peer: NodeId(2),
                id
            }
        )]
    );
}

#[test]
fn partition_drops_then_heal_delivers() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    network.disconnect("node-1:peer", "node-2:peer");
    one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 300);
    assert!(
        log.iter()
            .any(|(_, event)| matches!(event, Event::RequestFailed { .. }))
    );
    assert!(
        !log.iter()
            .any(|(_, event)| matches!(event, Event::PeerRequest { .. }))
    );

    network.heal();
    one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 300);
    assert!(
        log.iter()
            .any(|(_, event)| matches!(event, Event::PeerResponse { .. }))
    );
}

#[test]
fn wrong_cluster_rejected() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "other");
    one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 300);
    assert!(
        !log.iter()
            .any(|(_, event)| matches!(event, Event::PeerRequest { .. }))
    );
    assert!(
        log.iter()
            .any(|(_, event)| matches!(event, Event::RequestFailed { .. }))
    );
}

#[test]
fn client_request_and_response() {
    let network = MemNetwork::new();
    let mut two = node(&network, 2, "c");
    let mut client = MemClient::connect(&network, "node-2:client").unwrap();
    let id = client.send(ClientRequest::Status).unwrap();
    network.advance(Duration::from_millis(1));
    let mut events = Vec::new();
    two.poll(&mut events, None).unwrap();
    let Event::ClientRequest { conn, id: got, .. } = events[0].clone() else {
        panic!("expected a client request, got {events:?}");
    };
    assert_eq!(got, id);
    let response = ClientResponse::Value { value: None };
    two.respond_client(conn, got, response.clone()).unwrap();
    network.advance(Duration::from_millis(1));
    assert_eq!(client.poll().unwrap(), vec![(id, response)]);

    assert_eq!(
        MemClient::connect(&network, "node-9:client").unwrap_err(),
        MemClientError::Refused("node-9:client".to_owned())
    );
}

#[test]
fn same_inputs_same_events() {
    let trace = || {
        let network = MemNetwork::new();
        let mut one = node(&network, 1, "c");
        let mut two = node(&network, 2, "c");
        for _ in 0..5 {
            one.send(NodeId(2), vote_request()).unwrap();
        }
        let log = run(&network, &mut [&mut one, &mut two], 50);
        format!("{log:?}")
    };
    assert_eq!(trace(), trace());
}

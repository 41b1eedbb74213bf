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
            transfer: false,
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

fn peer_requests(log: &[(usize, Event)], node: usize) -> Vec<transport::RequestId> {
    log.iter()
        .filter(|(index, _)| *index == node)
        .filter_map(|(_, event)| match event {
            Event::PeerRequest { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// Polls every transport each virtual millisecond for `millis` ms without
/// responding to any request.
fn run_silent(
    network: &MemNetwork,
    nodes: &mut [&mut MemTransport],
    millis: u64,
) -> Vec<(usize, Event)> {
    let mut log = Vec::new();
    for _ in 0..millis {
        for (index, node) in nodes.iter_mut().enumerate() {
            let mut events = Vec::new();
            node.poll(&mut events, None).unwrap();
            log.extend(events.into_iter().map(|event| (index, event)));
        }
        network.advance(Duration::from_millis(1));
    }
    log
}

#[test]
fn unknown_node_rejected() {
    let network = MemNetwork::new();
    let mut two = node(&network, 2, "c");
    // Node 3 lists itself as a member, but node 2's member list lacks it.
    let members = [1, 2, 3]
        .into_iter()
        .map(|member| PeerAddr {
            id: NodeId(member),
            addr: format!("node-{member}:peer"),
        })
        .collect();
    let mut config = TransportConfig::new(NodeId(3), "c".to_owned(), members);
    config.request_timeout = Duration::from_millis(100);
    let mut three = MemTransport::new(&network, config, "node-3:client").unwrap();
    let id = three.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut three, &mut two], 300);
    assert!(peer_requests(&log, 1).is_empty(), "{log:?}");
    assert!(log.contains(&(
        0,
        Event::RequestFailed {
            peer: NodeId(2),
            id
        }
    )));
}

#[test]
fn dropped_response_retried_and_answered_once() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    let id = one.send(NodeId(2), vote_request()).unwrap();

    // Node 2 ignores the first copy, then responds to the retry twice.
    let log = run_silent(&network, &mut [&mut one, &mut two], 150);
    assert_eq!(peer_requests(&log, 1), vec![id, id]);
    let Some((_, Event::PeerRequest { conn, .. })) = log.last() else {
        panic!("expected the retried request last, got {log:?}");
    };
    let response = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::RequestVoteResponse { granted: true },
    };
    two.respond_peer(*conn, id, response.clone()).unwrap();
    two.respond_peer(*conn, id, response.clone()).unwrap();

    let log = run_silent(&network, &mut [&mut one, &mut two], 300);
    assert_eq!(
        log,
        vec![(
            0,
            Event::PeerResponse {
                peer: NodeId(2),
                id,
                message: response
            }
        )]
    );
}

#[test]
fn in_flight_request_resent_after_peer_restart() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    let id = one.send(NodeId(2), vote_request()).unwrap();
    let log = run_silent(&network, &mut [&mut one, &mut two], 5);
    assert_eq!(peer_requests(&log, 1), vec![id]);

    drop(two);
    let mut two = node(&network, 2, "c");
    let log = run(&network, &mut [&mut one, &mut two], 100);
    assert_eq!(peer_requests(&log, 1), vec![id]);
    let responses = log
        .iter()
        .filter(|(_, event)| matches!(event, Event::PeerResponse { id: got, .. } if *got == id))
        .count();
    assert_eq!(responses, 1, "{log:?}");
}

#[test]
fn crashed_peer_closes_accepted_connection() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 10);
    let Some(Event::PeerRequest { conn, .. }) = log
        .iter()
        .map(|(_, event)| event)
        .find(|event| matches!(event, Event::PeerRequest { .. }))
        .cloned()
    else {
        panic!("expected a peer request, got {log:?}");
    };

    drop(one);
    let log = run(&network, &mut [&mut two], 1);
    assert_eq!(log, vec![(0, Event::ConnectionClosed { conn })]);
    let response = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::RequestVoteResponse { granted: true },
    };
    assert!(
        two.respond_peer(conn, transport::RequestId(1), response)
            .is_err()
    );
}

#[test]
fn full_queue_fails_request_at_once() {
    let network = MemNetwork::new();
    let mut config = config(1, "c");
    config.max_queued_requests = 2;
    let mut one = MemTransport::new(&network, config, "node-1:client").unwrap();
    one.send(NodeId(2), vote_request()).unwrap();
    one.send(NodeId(2), vote_request()).unwrap();
    let third = one.send(NodeId(2), vote_request()).unwrap();
    let mut events = Vec::new();
    one.poll(&mut events, None).unwrap();
    assert_eq!(
        events,
        vec![Event::RequestFailed {
            peer: NodeId(2),
            id: third
        }]
    );
}

#[test]
fn frames_keep_order_when_latency_drops() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    one.send(NodeId(2), vote_request()).unwrap();
    run(&network, &mut [&mut one, &mut two], 10);

    network.set_latency(Duration::from_millis(20));
    let first = one.send(NodeId(2), vote_request()).unwrap();
    network.advance(Duration::from_millis(1));
    network.set_latency(Duration::from_millis(1));
    let second = one.send(NodeId(2), vote_request()).unwrap();
    let log = run_silent(&network, &mut [&mut one, &mut two], 30);
    assert_eq!(peer_requests(&log, 1), vec![first, second]);
}

#[test]
fn client_sees_close_when_node_crashes() {
    let network = MemNetwork::new();
    let two = node(&network, 2, "c");
    let mut client = MemClient::connect(&network, "node-2:client").unwrap();
    drop(two);
    assert_eq!(client.poll().unwrap_err(), MemClientError::Closed);
    assert_eq!(
        client.send(ClientRequest::Status).unwrap_err(),
        MemClientError::Closed
    );
}

#[test]
fn next_deadline_is_retry_time() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    assert_eq!(one.next_deadline(), None);
    one.send(NodeId(2), vote_request()).unwrap();
    run_silent(&network, &mut [&mut one, &mut two], 3);
    // The request went out at 1 ms, after the handshake round trip, and
    // times out 100 ms later.
    let expected = network.now() - Duration::from_millis(3) + Duration::from_millis(102);
    assert_eq!(one.next_deadline(), Some(expected));
}

#[test]
fn same_seed_same_events_under_faults() {
    let trace = |seed| {
        let network = MemNetwork::with_seed(seed);
        network.set_faults(transport_tcp_mem::Faults {
            drop_ppm: 200_000,
            duplicate_ppm: 200_000,
            max_extra_delay: Duration::from_millis(5),
        });
        let mut one = node(&network, 1, "c");
        let mut two = node(&network, 2, "c");
        for _ in 0..20 {
            one.send(NodeId(2), vote_request()).unwrap();
        }
        let log = run(&network, &mut [&mut one, &mut two], 400);
        (format!("{log:?}"), network.fault_counts())
    };
    let (log, (dropped, duplicated)) = trace(7);
    assert!(dropped > 0);
    assert!(duplicated > 0);
    assert_eq!(trace(7).0, log);
}

#[test]
fn partition_isolates_groups() {
    let network = MemNetwork::new();
    let mut one = node(&network, 1, "c");
    let mut two = node(&network, 2, "c");
    network.partition(&[&["node-1:peer"], &["node-2:peer"]]);
    let id = one.send(NodeId(2), vote_request()).unwrap();
    let log = run(&network, &mut [&mut one, &mut two], 300);
    assert!(peer_requests(&log, 1).is_empty(), "{log:?}");
    assert!(log.contains(&(
        0,
        Event::RequestFailed {
            peer: NodeId(2),
            id
        }
    )));
}

//! Two or more transports on 127.0.0.1 exchanging real TCP traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use transport::frame;
use transport::handshake::{Hello, HelloReply};
use transport::{
    ClientRequest, ClientResponse, Envelope, Event, PeerAddr, RequestId, Transport, TransportConfig,
};
use transport_epoll::EpollTransport;

const CLUSTER: &str = "test-cluster";

fn free_addrs(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

/// Peer and client addresses for nodes 1 and 2.
struct Addrs {
    peer: Vec<SocketAddr>,
    client: Vec<SocketAddr>,
}

fn addrs() -> Addrs {
    let all = free_addrs(4);
    Addrs {
        peer: vec![all[0], all[1]],
        client: vec![all[2], all[3]],
    }
}

fn config(id: u64, addrs: &Addrs) -> TransportConfig {
    let members = (1..=2)
        .map(|member| PeerAddr {
            id: NodeId(member),
            addr: addrs.peer[member as usize - 1].to_string(),
        })
        .collect();
    let mut config = TransportConfig::new(NodeId(id), CLUSTER.to_owned(), members);
    config.request_timeout = Duration::from_millis(200);
    config.max_attempts = 3;
    config.reconnect_backoff_min = Duration::from_millis(10);
    config.reconnect_backoff_max = Duration::from_millis(100);
    config
}

fn bind(id: u64, addrs: &Addrs) -> EpollTransport {
    let index = id as usize - 1;
    EpollTransport::bind(config(id, addrs), addrs.peer[index], addrs.client[index]).unwrap()
}

fn vote_request(from: u64, to: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(3),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(7),
            last_log_term: Term(2),
            transfer: false,
        },
    }
}

fn vote_response(from: u64, to: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(3),
        body: MessageBody::RequestVoteResponse { granted: true },
    }
}

/// Polls every transport until `done` returns true for the events collected
/// so far, or five seconds pass.
fn pump(
    transports: &mut [&mut EpollTransport],
    mut done: impl FnMut(&[(usize, Event)]) -> bool,
) -> Vec<(usize, Event)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        for (index, transport) in transports.iter_mut().enumerate() {
            let mut events = Vec::new();
            transport
                .poll(&mut events, Some(Duration::from_millis(5)))
                .unwrap();
            seen.extend(events.into_iter().map(|event| (index, event)));
        }
        if done(&seen) {
            return seen;
        }
    }
    panic!("condition not met within 5 s; events: {seen:?}");
}

fn is_response(event: &Event) -> bool {
    matches!(event, Event::PeerResponse { .. })
}

#[test]
fn request_and_response_between_peers() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let mut two = bind(2, &addrs);
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();

    let events = pump(&mut [&mut one, &mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::PeerRequest { .. }))
    });
    let (conn, id) = events
        .iter()
        .find_map(|(index, event)| match event {
            Event::PeerRequest {
                conn,
                id,
                from,
                message,
            } => {
                assert_eq!(*index, 1);
                assert_eq!(*from, NodeId(1));
                assert_eq!(*message, vote_request(1, 2));
                Some((*conn, *id))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(id, sent);
    two.respond_peer(conn, id, vote_response(2, 1)).unwrap();

    let events = pump(&mut [&mut one, &mut two], |seen| {
        seen.iter().any(|(_, event)| is_response(event))
    });
    let response = events.iter().find(|(_, event)| is_response(event)).unwrap();
    assert_eq!(
        response.1,
        Event::PeerResponse {
            peer: NodeId(2),
            id: sent,
            message: vote_response(2, 1),
        }
    );
}

#[test]
fn unanswered_request_retried_then_answered_once() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let mut two = bind(2, &addrs);
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();

    // Node 2 ignores the first copy and responds to the retry twice.
    let events = pump(&mut [&mut one, &mut two], |seen| {
        seen.iter()
            .filter(|(_, event)| matches!(event, Event::PeerRequest { .. }))
            .count()
            >= 2
    });
    let (conn, id) = events
        .iter()
        .filter_map(|(_, event)| match event {
            Event::PeerRequest { conn, id, .. } => Some((*conn, *id)),
            _ => None,
        })
        .nth(1)
        .unwrap();
    assert_eq!(id, sent, "the retry keeps the request id");
    two.respond_peer(conn, id, vote_response(2, 1)).unwrap();
    two.respond_peer(conn, id, vote_response(2, 1)).unwrap();

    let events = pump(&mut [&mut one, &mut two], |seen| {
        seen.iter().any(|(_, event)| is_response(event))
    });
    // Let the duplicate arrive too; it must be dropped.
    let mut later = Vec::new();
    for _ in 0..20 {
        one.poll(&mut later, Some(Duration::from_millis(5)))
            .unwrap();
    }
    let responses = events
        .iter()
        .map(|(_, event)| event)
        .chain(later.iter())
        .filter(|event| is_response(event))
        .count();
    assert_eq!(responses, 1);
}

#[test]
fn request_to_absent_peer_fails() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    let events = pump(&mut [&mut one], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::RequestFailed { .. }))
    });
    assert!(events.contains(&(
        0,
        Event::RequestFailed {
            peer: NodeId(2),
            id: sent
        }
    )));
}

#[test]
fn reconnects_after_peer_restart() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let mut two = bind(2, &addrs);
    one.send(NodeId(2), vote_request(1, 2)).unwrap();
    pump(&mut [&mut one, &mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::PeerRequest { .. }))
    });

    drop(two);
    let mut two = bind(2, &addrs);
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    let events = pump(&mut [&mut one, &mut two], |seen| {
        seen.iter().any(|(index, event)| {
            *index == 1 && matches!(event, Event::PeerRequest { id, .. } if *id == sent)
        })
    });
    assert!(!events.is_empty());
}

fn write_frame<T: serde::Serialize>(stream: &mut TcpStream, value: &T) {
    let mut bytes = Vec::new();
    frame::encode(value, frame::MAX_PEER_FRAME, &mut bytes).unwrap();
    stream.write_all(&bytes).unwrap();
}

fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> Option<T> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).ok()?;
    let mut body = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).ok()?;
    frame::decode(&body).ok()
}

/// Polls the transport until it closes `stream`. Returns false when it is
/// still open after five seconds.
fn closed_by(transport: &mut EpollTransport, stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0; 256];
    while Instant::now() < deadline {
        let mut events = Vec::new();
        transport
            .poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return true,
        }
    }
    false
}

/// Runs the client handshake on a raw connection from a test thread, while
/// the test's own thread keeps polling the transport.
fn handshake_in_thread(
    addr: SocketAddr,
    hello: Hello,
) -> std::thread::JoinHandle<(TcpStream, Option<HelloReply>)> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write_frame(&mut stream, &hello);
        let reply = read_frame(&mut stream);
        (stream, reply)
    })
}

fn finish<T>(transport: &mut EpollTransport, handle: std::thread::JoinHandle<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !handle.is_finished() && Instant::now() < deadline {
        let mut events = Vec::new();
        transport
            .poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
    }
    handle.join().unwrap()
}

#[test]
fn bad_handshakes_rejected() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let cases = [
        Hello::peer("other-cluster", NodeId(1)),
        Hello::peer(CLUSTER, NodeId(9)),
        Hello::peer(CLUSTER, NodeId(2)),
        Hello::client(),
    ];
    for hello in cases {
        let handle = handshake_in_thread(addrs.peer[1], hello.clone());
        let (mut stream, reply) = finish(&mut two, handle);
        let reply = reply.expect("a rejection reply before the close");
        assert!(!reply.accepted, "{hello:?}");
        assert!(reply.error.is_some());
        assert!(closed_by(&mut two, &mut stream), "{hello:?}");
    }
}

#[test]
fn garbage_and_oversized_frames_close_only_their_connection() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let mut two = bind(2, &addrs);

    for addr in [addrs.peer[1], addrs.client[1]] {
        let mut garbage = TcpStream::connect(addr).unwrap();
        garbage.write_all(b"\x00\x00\x00\x05hello world").unwrap();
        assert!(closed_by(&mut two, &mut garbage));

        let mut oversized = TcpStream::connect(addr).unwrap();
        oversized.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(closed_by(&mut two, &mut oversized));
    }

    // The peer port still serves a proper peer.
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    pump(&mut [&mut one, &mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::PeerRequest { id, .. } if *id == sent))
    });
}

#[test]
fn client_request_and_response() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let handle = handshake_in_thread(addrs.client[1], Hello::client());
    let (mut stream, reply) = finish(&mut two, handle);
    assert!(reply.unwrap().accepted);

    write_frame(
        &mut stream,
        &Envelope {
            id: RequestId(41),
            body: ClientRequest::Get { key: b"k".to_vec() },
        },
    );
    let events = pump(&mut [&mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::ClientRequest { .. }))
    });
    let (conn, id, request) = events
        .into_iter()
        .find_map(|(_, event)| match event {
            Event::ClientRequest { conn, id, request } => Some((conn, id, request)),
            _ => None,
        })
        .unwrap();
    assert_eq!(id, RequestId(41));
    assert_eq!(request, ClientRequest::Get { key: b"k".to_vec() });
    let response = ClientResponse::Value {
        value: Some(b"v".to_vec()),
    };
    two.respond_client(conn, id, response.clone()).unwrap();
    let handle = std::thread::spawn(move || read_frame::<Envelope<ClientResponse>>(&mut stream));
    let envelope = finish(&mut two, handle).unwrap();
    assert_eq!(envelope.id, RequestId(41));
    assert_eq!(envelope.body, response);
}

#[test]
fn silent_connection_closed_after_handshake_timeout() {
    // A connection that never sends its handshake is closed once the
    // 5-second handshake timeout passes, and not before.
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let mut idle = TcpStream::connect(addrs.client[1]).unwrap();
    idle.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut buf = [0; 8];
    let closed_after = loop {
        let mut events = Vec::new();
        two.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        match idle.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected read result {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "idle connection never closed"
        );
    };
    assert!(
        closed_after >= Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
}

fn bind_with(id: u64, addrs: &Addrs, config: TransportConfig) -> EpollTransport {
    let index = id as usize - 1;
    EpollTransport::bind(config, addrs.peer[index], addrs.client[index]).unwrap()
}

fn peer_requests(events: &[(usize, Event)], node: usize) -> Vec<RequestId> {
    events
        .iter()
        .filter(|(index, _)| *index == node)
        .filter_map(|(_, event)| match event {
            Event::PeerRequest { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn in_flight_request_resent_after_peer_restart() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let mut two = bind(2, &addrs);
    let sent = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    pump(&mut [&mut one, &mut two], |seen| {
        peer_requests(seen, 1).contains(&sent)
    });

    // Node 2 restarts without responding, and node 1 sees the connection break
    // and sends the request again, with the same id, on a new connection.
    drop(two);
    let mut two = bind(2, &addrs);
    let events = pump(&mut [&mut one, &mut two], |seen| {
        peer_requests(seen, 1).contains(&sent)
    });
    let failed = events
        .iter()
        .any(|(_, event)| matches!(event, Event::RequestFailed { .. }));
    assert!(!failed, "{events:?}");
}

#[test]
fn full_queue_fails_request_at_once() {
    let addrs = addrs();
    let mut config = config(1, &addrs);
    config.max_queued_requests = 2;
    config.request_timeout = Duration::from_secs(10);
    let mut one = bind_with(1, &addrs, config);
    let first = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    let second = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    let third = one.send(NodeId(2), vote_request(1, 2)).unwrap();
    assert_ne!(first, second);

    let started = Instant::now();
    let mut events = Vec::new();
    one.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        events,
        vec![Event::RequestFailed {
            peer: NodeId(2),
            id: third
        }]
    );
}

#[test]
fn send_to_unknown_peer_rejected() {
    let addrs = addrs();
    let mut one = bind(1, &addrs);
    let error = one.send(NodeId(7), vote_request(1, 7)).unwrap_err();
    assert!(matches!(
        error,
        transport::TransportError::UnknownPeer(NodeId(7))
    ));
}

#[test]
fn client_disconnect_reports_connection_closed() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let handle = handshake_in_thread(addrs.client[1], Hello::client());
    let (mut stream, reply) = finish(&mut two, handle);
    assert!(reply.unwrap().accepted);
    write_frame(
        &mut stream,
        &Envelope {
            id: RequestId(1),
            body: ClientRequest::Status,
        },
    );
    let events = pump(&mut [&mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::ClientRequest { .. }))
    });
    let conn = events
        .iter()
        .find_map(|(_, event)| match event {
            Event::ClientRequest { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();

    drop(stream);
    pump(&mut [&mut two], |seen| {
        seen.contains(&(0, Event::ConnectionClosed { conn }))
    });
    let error = two
        .respond_client(conn, RequestId(1), ClientResponse::Value { value: None })
        .unwrap_err();
    assert!(matches!(
        error,
        transport::TransportError::ConnectionClosed(closed) if closed == conn
    ));
}

#[test]
fn respond_on_listener_key_is_connection_closed() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    // Keys 0 and 1 are the two listeners, never accepted connections.
    for key in [0, 1, 999] {
        let conn = transport::ConnId(key);
        let error = two
            .respond_peer(conn, RequestId(1), vote_response(2, 1))
            .unwrap_err();
        assert!(
            matches!(error, transport::TransportError::ConnectionClosed(_)),
            "{error:?}"
        );
    }
}

#[test]
fn invalid_request_after_handshake_closes_connection() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let handle = handshake_in_thread(addrs.client[1], Hello::client());
    let (mut stream, reply) = finish(&mut two, handle);
    assert!(reply.unwrap().accepted);

    write_frame(
        &mut stream,
        &serde_json::json!({ "id": 1, "body": "no such op" }),
    );
    let mut events = Vec::new();
    assert!(closed_by_collecting(&mut two, &mut stream, &mut events));
    let closed = events
        .iter()
        .any(|event| matches!(event, Event::ConnectionClosed { .. }));
    assert!(closed, "{events:?}");
    let requests = events
        .iter()
        .any(|event| matches!(event, Event::ClientRequest { .. }));
    assert!(!requests, "{events:?}");
}

/// Like [`closed_by`], but keeps the transport's events.
fn closed_by_collecting(
    transport: &mut EpollTransport,
    stream: &mut TcpStream,
    events: &mut Vec<Event>,
) -> bool {
    stream.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0; 256];
    while Instant::now() < deadline {
        transport
            .poll(events, Some(Duration::from_millis(5)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => {
                // One more poll, in case the close event is still pending.
                transport.poll(events, Some(Duration::ZERO)).unwrap();
                return true;
            }
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn connections_above_limit_closed() {
    let addrs = addrs();
    let mut config = config(2, &addrs);
    config.max_connections = 1;
    let mut two = bind_with(2, &addrs, config);

    let mut first = TcpStream::connect(addrs.client[1]).unwrap();
    let mut events = Vec::new();
    two.poll(&mut events, Some(Duration::from_millis(50)))
        .unwrap();
    let mut second = TcpStream::connect(addrs.client[1]).unwrap();
    assert!(closed_by(&mut two, &mut second));

    // The first connection still completes its handshake.
    write_frame(&mut first, &Hello::client());
    let handle = std::thread::spawn(move || {
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        read_frame::<HelloReply>(&mut first)
    });
    let reply = finish(&mut two, handle).expect("a hello reply");
    assert!(reply.accepted);
}

#[test]
fn client_port_serves_after_garbage() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let mut garbage = TcpStream::connect(addrs.client[1]).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_by(&mut two, &mut garbage));

    let handle = handshake_in_thread(addrs.client[1], Hello::client());
    let (_stream, reply) = finish(&mut two, handle);
    assert!(reply.unwrap().accepted);
}

#[test]
fn client_that_never_reads_is_closed() {
    let addrs = addrs();
    let mut two = bind(2, &addrs);
    let handle = handshake_in_thread(addrs.client[1], Hello::client());
    let (mut stream, reply) = finish(&mut two, handle);
    assert!(reply.unwrap().accepted);
    write_frame(
        &mut stream,
        &Envelope {
            id: RequestId(1),
            body: ClientRequest::Status,
        },
    );
    let events = pump(&mut [&mut two], |seen| {
        seen.iter()
            .any(|(_, event)| matches!(event, Event::ClientRequest { .. }))
    });
    let conn = events
        .iter()
        .find_map(|(_, event)| match event {
            Event::ClientRequest { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();

    // The client reads nothing while responses of 1 MiB pile up: past the
    // 64 MiB limit of unread output the transport closes the connection
    // instead of buffering without bound.
    let big = ClientResponse::Value {
        value: Some(vec![0; 1 << 20]),
    };
    let mut closed = false;
    for _ in 0..200 {
        if two.respond_client(conn, RequestId(1), big.clone()).is_err() {
            closed = true;
            break;
        }
        let mut events = Vec::new();
        two.poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        if events.contains(&Event::ConnectionClosed { conn }) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the transport kept buffering for a client that never reads"
    );
    drop(stream);
}

//! Waking a transport's poll from another thread.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft_core::NodeId;
use transport::{PeerAddr, Transport, TransportConfig};
use transport_epoll::EpollTransport;

/// A poll timeout far above what any wake takes, so that a test that ends
/// by timeout fails its time check.
const LONG_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-member transport on ephemeral ports, so no peer connection sets a
/// deadline that would end the poll early.
fn bind_alone() -> EpollTransport {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let members = vec![PeerAddr {
        id: NodeId(1),
        addr: "127.0.0.1:1".to_owned(),
    }];
    let config = TransportConfig::new(NodeId(1), "waker-test".to_owned(), members);
    EpollTransport::bind(config, any, any).unwrap()
}

#[test]
fn wake_from_thread_ends_poll() {
    let mut transport = bind_alone();
    let waker = transport.waker();
    let waking = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });

    let started = Instant::now();
    let mut events = Vec::new();
    transport.poll(&mut events, Some(LONG_TIMEOUT)).unwrap();
    let waited = started.elapsed();
    waking.join().unwrap();

    assert!(events.is_empty(), "{events:?}");
    assert!(waited < Duration::from_secs(10), "poll waited {waited:?}");
}

#[test]
fn wake_before_poll_ends_next_poll() {
    let mut transport = bind_alone();
    transport.waker().wake().unwrap();

    let started = Instant::now();
    let mut events = Vec::new();
    transport.poll(&mut events, Some(LONG_TIMEOUT)).unwrap();
    let waited = started.elapsed();

    assert!(waited < Duration::from_secs(10), "poll waited {waited:?}");
}

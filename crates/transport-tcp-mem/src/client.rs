//! A client of one node's client port on the simulated network.

use transport::frame::{self, FrameDecoder};
use transport::handshake::{Hello, HelloReply};
use transport::{ClientRequest, ClientResponse, Envelope, RequestId};

use crate::network::{EndpointId, MemNetwork, NetConnId};

/// Why a [`MemClient`] call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemClientError {
    #[error("nothing listens on {0}")]
    Refused(String),
    #[error("the connection is closed")]
    Closed,
    #[error("the node rejected the handshake: {0}")]
    Rejected(String),
}

/// A connection to one node's client address. Send requests with
/// [`MemClient::send`]; responses arrive from [`MemClient::poll`] once the
/// network delivers them.
#[derive(Debug)]
pub struct MemClient {
    network: MemNetwork,
    endpoint: EndpointId,
    conn: NetConnId,
    decoder: FrameDecoder,
    handshaken: bool,
    next_request: u64,
}

impl MemClient {
    /// Connects to `addr` and sends the client handshake.
    ///
    /// # Errors
    ///
    /// Returns [`MemClientError::Refused`] when nothing listens on `addr`.
    pub fn connect(network: &MemNetwork, addr: &str) -> Result<MemClient, MemClientError> {
        let mut inner = network.inner.borrow_mut();
        if !inner.listeners.contains_key(addr) {
            return Err(MemClientError::Refused(addr.to_owned()));
        }
        let endpoint = inner.new_endpoint(format!("client-{addr}"));
        let conn = inner
            .connect(endpoint, addr)
            .ok_or_else(|| MemClientError::Refused(addr.to_owned()))?;
        let mut bytes = Vec::new();
        frame::encode(&Hello::client(), frame::MAX_CLIENT_FRAME, &mut bytes)
            .expect("a hello always fits a frame");
        inner.send(conn, true, bytes, true);
        drop(inner);
        Ok(MemClient {
            network: network.clone(),
            endpoint,
            conn,
            decoder: FrameDecoder::new(frame::MAX_CLIENT_FRAME),
            handshaken: false,
            next_request: 1,
        })
    }

    /// Sends a request and returns its id.
    ///
    /// # Errors
    ///
    /// Returns [`MemClientError::Closed`] when the node closed the connection.
    pub fn send(&mut self, request: ClientRequest) -> Result<RequestId, MemClientError> {
        let mut inner = self.network.inner.borrow_mut();
        if !inner.is_open(self.conn) {
            return Err(MemClientError::Closed);
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let mut bytes = Vec::new();
        frame::encode(
            &Envelope { id, body: request },
            frame::MAX_CLIENT_FRAME,
            &mut bytes,
        )
        .expect("requests built by tests fit a frame");
        inner.send(self.conn, true, bytes, true);
        Ok(id)
    }

    /// Returns the responses delivered by now.
    ///
    /// # Errors
    ///
    /// Returns [`MemClientError::Rejected`] when the handshake failed, and
    /// [`MemClientError::Closed`] when a response is malformed or when the
    /// connection is closed and every response sent before the close was
    /// returned.
    pub fn poll(&mut self) -> Result<Vec<(RequestId, ClientResponse)>, MemClientError> {
        let (packets, closed) = {
            let mut inner = self.network.inner.borrow_mut();
            let packets = inner.take_due(self.endpoint);
            let closed = inner.closed_conns(self.endpoint).contains(&self.conn);
            (packets, closed)
        };
        for packet in packets {
            self.decoder.extend(&packet.bytes);
        }
        let mut responses = Vec::new();
        while let Some(body) = self
            .decoder
            .next_frame()
            .map_err(|_| MemClientError::Closed)?
        {
            if !self.handshaken {
                let reply: HelloReply = frame::decode(&body).map_err(|_| MemClientError::Closed)?;
                if !reply.accepted {
                    return Err(MemClientError::Rejected(reply.error.unwrap_or_default()));
                }
                self.handshaken = true;
                continue;
            }
            let envelope: Envelope<ClientResponse> =
                frame::decode(&body).map_err(|_| MemClientError::Closed)?;
            responses.push((envelope.id, envelope.body));
        }
        if closed && responses.is_empty() {
            return Err(MemClientError::Closed);
        }
        Ok(responses)
    }
}

impl Drop for MemClient {
    fn drop(&mut self) {
        self.network
            .inner
            .borrow_mut()
            .remove_endpoint(self.endpoint);
    }
}

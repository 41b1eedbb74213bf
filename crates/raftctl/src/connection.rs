//! One client connection to a node's client port.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Instant;

use async_io::{Async, Timer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use transport::handshake::{Hello, HelloReply};
use transport::{ClientRequest, ClientResponse, Envelope, RequestId, frame};

use crate::error::ClientError;

/// An open, handshaken connection to one endpoint. Requests on it are sent
/// one at a time.
#[derive(Debug)]
pub struct Connection {
    endpoint: String,
    stream: Async<TcpStream>,
    next_id: u64,
}

impl Connection {
    /// Connects to `endpoint` and completes the client handshake.
    ///
    /// # Errors
    ///
    /// Returns [`ClientError::Timeout`] when `deadline` passes first, and the
    /// connection or handshake error otherwise.
    pub async fn open(endpoint: &str, deadline: Instant) -> Result<Connection, ClientError> {
        let work = async {
            let addr = endpoint
                .to_socket_addrs()
                .map_err(|source| ClientError::Connect {
                    endpoint: endpoint.to_owned(),
                    source,
                })?
                .next()
                .ok_or_else(|| ClientError::Connect {
                    endpoint: endpoint.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the name resolved to no address",
                    ),
                })?;
            let stream =
                Async::<TcpStream>::connect(addr)
                    .await
                    .map_err(|source| ClientError::Connect {
                        endpoint: endpoint.to_owned(),
                        source,
                    })?;
            stream.get_ref().set_nodelay(true).ok();
            let mut connection = Connection {
                endpoint: endpoint.to_owned(),
                stream,
                next_id: 1,
            };
            connection.write_frame(&Hello::client()).await?;
            let reply: HelloReply = connection.read_frame().await?;
            if !reply.accepted {
                return Err(ClientError::Handshake {
                    endpoint: endpoint.to_owned(),
                    reason: reply.error.unwrap_or_default(),
                });
            }
            Ok(connection)
        };
        with_deadline(work, deadline, endpoint).await
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request and waits for its response.
    ///
    /// # Errors
    ///
    /// Returns [`ClientError::Timeout`] when `deadline` passes first. After
    /// any error the connection must be dropped.
    pub async fn call(
        &mut self,
        request: ClientRequest,
        deadline: Instant,
    ) -> Result<ClientResponse, ClientError> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let endpoint = self.endpoint.clone();
        let work = async {
            self.write_frame(&Envelope { id, body: request }).await?;
            loop {
                let response: Envelope<ClientResponse> = self.read_frame().await?;
                if response.id == id {
                    return Ok(response.body);
                }
            }
        };
        with_deadline(work, deadline, &endpoint).await
    }

    async fn write_frame<T: Serialize>(&mut self, value: &T) -> Result<(), ClientError> {
        let mut bytes = Vec::new();
        frame::encode(value, frame::MAX_CLIENT_FRAME, &mut bytes).map_err(|source| {
            ClientError::Frame {
                endpoint: self.endpoint.clone(),
                source,
            }
        })?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|source| self.io_error(source))
    }

    async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        let mut header = [0; frame::HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .await
            .map_err(|source| self.io_error(source))?;
        let len = u32::from_be_bytes(header) as usize;
        if len > frame::MAX_CLIENT_FRAME {
            return Err(ClientError::Frame {
                endpoint: self.endpoint.clone(),
                source: transport::FrameError::TooLarge {
                    len,
                    max: frame::MAX_CLIENT_FRAME,
                },
            });
        }
        let mut body = vec![0; len];
        self.stream
            .read_exact(&mut body)
            .await
            .map_err(|source| self.io_error(source))?;
        frame::decode(&body).map_err(|source| ClientError::Frame {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            endpoint: self.endpoint.clone(),
            source,
        }
    }
}

async fn with_deadline<T>(
    work: impl Future<Output = Result<T, ClientError>>,
    deadline: Instant,
    endpoint: &str,
) -> Result<T, ClientError> {
    let timeout = async {
        Timer::at(deadline).await;
        Err(ClientError::Timeout {
            endpoint: endpoint.to_owned(),
        })
    };
    work.or(timeout).await
}

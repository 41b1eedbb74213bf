//! A listening socket: accepts connections and hands each to a new
//! [`Accepted`] handler.

use std::io;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::accepted::Accepted;
use crate::handler::{Context, Handler, Status};

/// The port a listener serves, which decides the protocol its connections
/// speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Port {
    Peer,
    Client,
}

impl Port {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Port::Peer => "peer",
            Port::Client => "client",
        }
    }
}

/// Time the listener stops accepting after an accept error such as running
/// out of file descriptors. The pending connection keeps the listener
/// readable, so re-arming at once would turn the loop into a busy spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct Listener {
    key: usize,
    port: Port,
    socket: TcpListener,
    /// Set after an accept error: the listener is not armed until then.
    paused_until: Option<Instant>,
}

impl Listener {
    pub(crate) fn new(key: usize, port: Port, socket: TcpListener) -> Listener {
        Listener {
            key,
            port,
            socket,
            paused_until: None,
        }
    }

    fn rearm(&self, context: &Context<'_>) {
        if let Err(error) = context
            .poller
            .modify(&self.socket, polling::Event::readable(self.key))
        {
            tracing::error!(port = self.port.name(), %error, "failed to re-arm the listener");
        }
    }

    pub(crate) fn socket(&self) -> &TcpListener {
        &self.socket
    }

    fn accept_one(&mut self, context: &mut Context<'_>) -> io::Result<bool> {
        let (stream, remote) = match self.socket.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        };
        if *context.accepted >= context.config.max_connections {
            tracing::warn!(
                port = self.port.name(),
                %remote,
                max = context.config.max_connections,
                "rejecting connection above the connection limit"
            );
            return Ok(true);
        }
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let key = context.allocate_key();
        let accepted = Accepted::new(key, self.port, stream, remote, context);
        // SAFETY: the stream is owned by the handler, which deletes it from
        // the poller before dropping it.
        if let Err(error) = unsafe {
            context
                .poller
                .add(accepted.stream(), polling::Event::readable(key))
        } {
            tracing::error!(%remote, %error, "failed to register an accepted connection");
            return Ok(true);
        }
        *context.accepted += 1;
        tracing::debug!(conn = key, port = self.port.name(), %remote, "accepted connection");
        context.added.push(Box::new(accepted));
        Ok(true)
    }
}

impl Handler for Listener {
    fn key(&self) -> usize {
        self.key
    }

    fn on_ready(&mut self, _event: polling::Event, context: &mut Context<'_>) -> Status {
        loop {
            match self.accept_one(context) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(error) => {
                    // Out of file descriptors and similar: pause, then keep
                    // listening, because the condition may pass.
                    tracing::error!(
                        port = self.port.name(),
                        %error,
                        pause_ms = ACCEPT_ERROR_PAUSE.as_millis() as u64,
                        "failed to accept a connection"
                    );
                    self.paused_until = Some(context.now + ACCEPT_ERROR_PAUSE);
                    return Status::Open;
                }
            }
        }
        self.rearm(context);
        Status::Open
    }

    fn deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    fn on_timer(&mut self, context: &mut Context<'_>) -> Status {
        if self.paused_until.is_some_and(|until| until <= context.now) {
            self.paused_until = None;
            self.rearm(context);
        }
        Status::Open
    }

    fn on_removed(&mut self, context: &mut Context<'_>) {
        let _ = context.poller.delete(&self.socket);
    }
}

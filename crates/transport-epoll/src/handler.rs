//! The trait of every registered socket's handler, and the context the
//! event loop lends it.

use std::time::Instant;

use polling::Poller;
use transport::{Event, TransportConfig};

use crate::initiated::Initiated;

/// The event loop's shared state, lent to one handler at a time.
pub(crate) struct Context<'a> {
    pub(crate) poller: &'a Poller,
    pub(crate) config: &'a TransportConfig,
    pub(crate) now: Instant,
    /// Events for the caller of `poll`.
    pub(crate) events: &'a mut Vec<Event>,
    /// Handlers created during this turn, registered when it ends.
    pub(crate) added: Vec<Box<dyn Handler>>,
    /// Keys handed out so far; a new socket takes the next one.
    pub(crate) next_key: &'a mut usize,
    /// Accepted connections currently open.
    pub(crate) accepted: &'a mut usize,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        poller: &'a Poller,
        config: &'a TransportConfig,
        events: &'a mut Vec<Event>,
        next_key: &'a mut usize,
        accepted: &'a mut usize,
    ) -> Context<'a> {
        Context {
            poller,
            config,
            now: Instant::now(),
            events,
            added: Vec::new(),
            next_key,
            accepted,
        }
    }

    pub(crate) fn allocate_key(&mut self) -> usize {
        let key = *self.next_key;
        *self.next_key += 1;
        key
    }
}

/// Whether a handler stays registered after handling an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Open,
    /// The handler closed its socket and is removed from the loop.
    Closed,
}

/// The object behind one poller key: a listener, an accepted connection or
/// an initiated connection. The event loop looks up the key of each readiness
/// event and calls the handler; it never needs to know which kind it is.
pub(crate) trait Handler {
    fn key(&self) -> usize;

    /// Handles readiness of the handler's socket and re-arms its interest
    /// (the poller reports each registration once until it is modified).
    fn on_ready(&mut self, event: polling::Event, context: &mut Context<'_>) -> Status;

    /// The next time this handler needs [`Handler::on_timer`], if any.
    fn deadline(&self) -> Option<Instant>;

    /// Handles deadlines that have passed: handshake and request timeouts,
    /// retries, reconnects.
    fn on_timer(&mut self, context: &mut Context<'_>) -> Status;

    /// Called once when the handler leaves the loop, after it returned
    /// [`Status::Closed`] or when the transport is dropped.
    fn on_removed(&mut self, _context: &mut Context<'_>) {}

    /// The handler as an initiated connection, so that `send` can queue on
    /// it.
    fn as_initiated(&mut self) -> Option<&mut Initiated> {
        None
    }

    /// Queues a response when the handler is an accepted connection.
    /// Returns false when it is not.
    fn queue_response(&mut self, _bytes: &[u8], _context: &mut Context<'_>) -> bool {
        false
    }

    /// Returns the largest frame a response on this connection may have,
    /// or `None` when the handler takes no responses.
    fn response_frame_limit(&self) -> Option<usize> {
        None
    }
}

//! The state one socket task shares with its leases and the pool, and the
//! commands the task accepts.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{SocketId, UpstreamError};

/// One upstream text frame, as read (shared, not copied).
pub type Frame = tokio_tungstenite::tungstenite::Utf8Bytes;

/// Frames of one turn, as the task hands them to the lease holder.
pub(crate) type FrameTx = mpsc::Sender<Result<Frame, UpstreamError>>;

/// Which frames of a response the socket task hands to the lease holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Every text frame (a streaming client sees each one).
    All,
    /// The frame that ends the response, and any frame whose type cannot
    /// be read from its first member (so a broken frame is still judged);
    /// the rest (`response.created`, deltas and progress events, which a
    /// non-streaming client never sees) are dropped by the socket task
    /// instead of being passed on one by one. When the first frame arrived
    /// is kept for the consumer ([`super::Lease::first_frame_at`]).
    Needed,
}

/// A request to the socket task.
pub(crate) enum Command {
    /// Send one `response.create` frame and stream the response back.
    Turn { frame: String, frames: FrameTx, relay: Relay },
}

/// Pool-visible state of one socket.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// A [`super::Lease`] holds the socket.
    pub leased: bool,
    /// Turns sent but not yet ended (including a drain).
    pub pending: u32,
    /// Why the socket died; set once, then the task is gone or going.
    pub dead: Option<UpstreamError>,
    /// The latest completed response on this connection (its cache).
    pub latest: Option<String>,
    /// No live session continues from `latest` any more (the session store
    /// retired it): the socket is as good as cold for a fresh turn, though
    /// a client chaining by itself may still find its response here.
    pub orphaned: bool,
    /// When the socket last became free (released, or its turn ended).
    pub idle_since: Option<std::time::Instant>,
    /// When the first frame of the latest ended turn arrived (its time to
    /// first event, for a consumer that was not handed that frame).
    pub first_frame: Option<std::time::Instant>,
}

impl State {
    /// Leased, or still receiving (or draining) a response.
    pub fn busy(&self) -> bool {
        self.leased || self.pending > 0
    }

    /// Holds a response some live session may continue from: a fresh turn
    /// takes such a socket last.
    pub fn holds_session(&self) -> bool {
        self.latest.is_some() && !self.orphaned
    }
}

/// The pool's list of sockets that became idle or died since it last looked,
/// in that order: a checkout reads it instead of looking at every socket.
pub(crate) type Freed = Arc<Mutex<Vec<SocketId>>>;

/// What the pool and leases share with the task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub id: SocketId,
    pub tenant: u128,
    pub opened_at: Instant,
    state: Mutex<State>,
    /// Woken whenever the socket may have become idle or died.
    notify: Arc<Notify>,
    /// Told the same, when the socket belongs to a pool.
    freed: OnceLock<Freed>,
}

impl Shared {
    pub(crate) fn new(id: SocketId, tenant: u128, notify: Arc<Notify>) -> Self {
        Self {
            id,
            tenant,
            opened_at: Instant::now(),
            state: Mutex::new(State::default()),
            notify,
            freed: OnceLock::new(),
        }
    }

    /// Reports to `freed` each time the socket becomes idle or dies.
    pub(crate) fn report_to(&self, freed: Freed) {
        let _ = self.freed.set(freed);
    }

    /// Wakes waiters, and tells the pool when the socket is now idle or dead.
    fn changed(&self, freed_or_dead: bool) {
        if freed_or_dead && let Some(f) = self.freed.get() {
            f.lock().unwrap_or_else(|e| e.into_inner()).push(self.id);
        }
        self.notify.notify_waiters();
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the socket if it is idle; `Err` says why not.
    pub(crate) fn try_lease(&self) -> Result<(), UpstreamError> {
        let mut s = self.lock();
        if s.dead.is_some() {
            return Err(UpstreamError::Gone);
        }
        if s.busy() {
            return Err(UpstreamError::Busy);
        }
        s.leased = true;
        Ok(())
    }

    pub(crate) fn release(&self) {
        let idle = {
            let mut s = self.lock();
            s.leased = false;
            s.idle_since = Some(std::time::Instant::now());
            !s.busy() && s.dead.is_none()
        };
        self.changed(idle);
    }

    pub(crate) fn end_turn(&self, latest: Option<String>, first_frame: Option<std::time::Instant>) {
        let idle = {
            let mut s = self.lock();
            s.pending = s.pending.saturating_sub(1);
            s.latest = latest;
            s.orphaned = false;
            s.first_frame = first_frame;
            s.idle_since = Some(std::time::Instant::now());
            !s.busy() && s.dead.is_none()
        };
        self.changed(idle);
    }

    pub(crate) fn die(&self, why: UpstreamError) {
        let first = {
            let mut s = self.lock();
            s.pending = 0;
            s.latest = None;
            s.orphaned = false;
            let first = s.dead.is_none();
            s.dead.get_or_insert(why);
            first
        };
        self.changed(first);
    }

    /// Out of service: gone for the pool (and so swept from it). The task
    /// ends once every handle is dropped, after the turn it is serving.
    pub(crate) fn retire(&self) {
        self.die(UpstreamError::Protocol("retired after a protocol violation".into()));
    }

    /// Age of the connection.
    pub(crate) fn age(&self) -> Duration {
        self.opened_at.elapsed()
    }
}

/// A handle on a running socket task.
#[derive(Debug, Clone)]
pub struct SocketHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: mpsc::UnboundedSender<Command>,
}

impl SocketHandle {
    /// The socket's id.
    pub fn id(&self) -> SocketId {
        self.shared.id
    }
}

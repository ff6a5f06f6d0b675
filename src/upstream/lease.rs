//! A [`Lease`]: exclusive use of one upstream socket for a turn, and the
//! stream of that turn's frames ([`TurnFrames`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;

use super::shared::{Command, Frame, Relay, SocketHandle};
use super::{SocketId, UpstreamError};

/// How many frames may wait for a slow consumer before the socket task stops
/// reading (TCP backpressure then reaches the server).
const FRAME_BUFFER: usize = 256;

/// Exclusive use of one socket. Dropping it returns the socket to the pool
/// (once any response in flight has ended) unless it died.
#[derive(Debug)]
pub struct Lease {
    handle: SocketHandle,
    fresh: bool,
    latest: Option<String>,
}

impl Lease {
    /// Leases `handle`, which the caller has already marked leased
    /// (`Shared::try_lease`).
    pub(crate) fn new(handle: SocketHandle, fresh: bool) -> Self {
        let latest = handle.shared.lock().latest.clone();
        Self { handle, fresh, latest }
    }

    /// Leases a socket that was spawned outside any pool, for tests and
    /// tools. `Err(Busy|Gone)` when it is not idle.
    pub fn take(handle: &SocketHandle) -> Result<Self, UpstreamError> {
        handle.shared.try_lease()?;
        Ok(Self::new(handle.clone(), false))
    }

    /// The socket's id (pin a session to it).
    pub fn id(&self) -> SocketId {
        self.handle.shared.id
    }

    /// Whether the socket was opened for this checkout (its cache is empty).
    pub fn fresh_connection(&self) -> bool {
        self.fresh
    }

    /// The socket's latest completed response when it was leased: the only
    /// parent a `store:false` continuation on it may name.
    pub fn latest_response_id(&self) -> Option<&str> {
        self.latest.as_deref()
    }

    /// The socket's latest completed response now (after this lease's own
    /// turns); `None` while a turn is in flight or after a failed one.
    pub fn current_latest_response_id(&self) -> Option<String> {
        self.handle.shared.lock().latest.clone()
    }

    /// When the first frame of the socket's latest ended turn arrived:
    /// after a [`Relay::Needed`] turn's terminal frame, that turn's time to
    /// first event (its first frame was not handed on).
    pub fn first_frame_at(&self) -> Option<std::time::Instant> {
        self.handle.shared.lock().first_frame
    }

    /// Age of the connection.
    pub fn age(&self) -> Duration {
        self.handle.shared.age()
    }

    /// Sends one `response.create` text frame and returns the stream of this
    /// response's frames. The stream ends after the terminal frame, or yields
    /// one `Err` if the socket dies. Dropping it early lets the socket drain
    /// the response in the background.
    pub async fn send(&mut self, frame: String) -> Result<TurnFrames, UpstreamError> {
        self.send_relaying(frame, Relay::All).await
    }

    /// [`Lease::send`], with the frames of the response passed on as `relay` says.
    pub async fn send_relaying(&mut self, frame: String, relay: Relay) -> Result<TurnFrames, UpstreamError> {
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        {
            let mut s = self.handle.shared.lock();
            if let Some(why) = &s.dead {
                return Err(why.clone().with_after_output(false));
            }
            s.pending += 1;
        }
        if self.handle.cmd.send(Command::Turn { frame, frames: tx, relay }).is_err() {
            let mut s = self.handle.shared.lock();
            s.pending = s.pending.saturating_sub(1);
            return Err(s.dead.clone().unwrap_or(UpstreamError::Gone));
        }
        Ok(TurnFrames { rx })
    }

    /// Gives the socket up instead of returning it to the pool: it is never
    /// leased again, and its task closes it once the response in flight (if
    /// any) has drained. For a socket that broke the protocol (a malformed
    /// frame): neither a retry nor another conversation should trust it.
    pub fn retire(self) {
        self.handle.shared.retire();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.handle.shared.release();
    }
}

/// The upstream text frames of one response, ending after its terminal frame.
#[derive(Debug)]
pub struct TurnFrames {
    rx: mpsc::Receiver<Result<Frame, UpstreamError>>,
}

impl TurnFrames {
    /// The next frame; `None` after the terminal frame or an error.
    pub async fn next(&mut self) -> Option<Result<Frame, UpstreamError>> {
        self.rx.recv().await
    }

    /// The next frame if one has already arrived: `Some` of what
    /// [`TurnFrames::next`] would give at once, `None` if it would wait.
    pub fn ready(&mut self) -> Option<Option<Result<Frame, UpstreamError>>> {
        match self.rx.try_recv() {
            Ok(frame) => Some(Some(frame)),
            Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::error::TryRecvError::Empty) => None,
        }
    }
}

impl Stream for TurnFrames {
    type Item = Result<Frame, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

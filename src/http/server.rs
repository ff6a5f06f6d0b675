//! The accept loop and graceful shutdown.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1 and h2c)
//! in a task the loop owns (a `JoinSet`). The task keeps two deadlines of its
//! own (hyper has one timer for both, which closes an idle keep-alive
//! connection as soon as a slow header): a request's head must be complete
//! within `header_read_timeout` of its first byte (an HTTP/1.1 connection
//! past it is dropped), and a connection with no request in progress and
//! none begun for `keepalive_timeout` is closed gracefully (for h2c with a
//! GOAWAY). On shutdown the loop stops
//! accepting, asks every connection to finish its in-flight requests and
//! streams, waits up to `shutdown_grace`, then aborts what is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::App;
use crate::error::api_error_body;
use crate::metrics::GaugeGuard;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// No request head begun (a value of [`Activity::head_since_ms`]).
const NO_HEAD: u64 = u64::MAX;

/// Requests in progress on one client connection, when it last had none,
/// and when the bytes of a request not yet handed to the service began.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    busy: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `opened` at which the first byte arrived since the
    /// last request was handed to the service (0 for the first request:
    /// `opened` is when its first byte was seen), or [`NO_HEAD`].
    head_since_ms: AtomicU64,
    /// The connection speaks h2c: its idle reads are frames of the protocol
    /// (pings, settings), not the start of a request head.
    h2: AtomicBool,
}

/// What ends an idle connection, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// A request head is arriving: complete by then, or the connection is dropped.
    Head(Instant),
    /// Nothing is arriving: closed gracefully then.
    Idle(Instant),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Head(at) | Deadline::Idle(at) => at,
        }
    }
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        })
    }

    fn ms_now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Bytes came in: the first ones while no request is in progress start
    /// a request head (on HTTP/1.1).
    fn on_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_since_ms.load(Ordering::Relaxed) == NO_HEAD {
            self.head_since_ms.store(self.ms_now(), Ordering::Relaxed);
        }
    }

    /// The deadline of an idle connection: `None` while a request is in
    /// progress.
    fn deadline(&self, head: Duration, keepalive: Duration) -> Option<Deadline> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = |ms: u64| self.opened + Duration::from_millis(ms);
        let head_since = self.head_since_ms.load(Ordering::Relaxed);
        if head_since != NO_HEAD && !self.h2.load(Ordering::Relaxed) {
            return Some(Deadline::Head(since(head_since) + head));
        }
        Some(Deadline::Idle(since(self.idle_since_ms.load(Ordering::Relaxed)) + keepalive))
    }
}

/// The client's stream, telling its connection's [`Activity`] when bytes
/// come in. Writes pass straight through (vectored too).
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One request in progress on its connection, until its response body is
/// done or dropped (a stream counts for as long as it runs).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        activity.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.ms_now(), Ordering::Relaxed);
        a.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections on `listener` until `shutdown` resolves, then drains.
pub async fn run(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let server = &app.config.server;
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection task keeps the header and idle deadlines itself.
        .header_read_timeout(None)
        .max_buf_size(server.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(server.max_header_bytes as u32);
    // Shared by every connection task (a connection borrows its builder).
    let builder = Arc::new(builder);
    // Tells every connection to finish what it serves and close, on shutdown.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(());
    let mut connections = JoinSet::new();
    // Connections turned away at `server.max_connections`, each answered 503 then closed.
    let mut refusals = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if connections.len() >= server.max_connections {
                        app.metrics.connections_refused.inc();
                        // Under a flood, answering is itself bounded: beyond that, just close.
                        if refusals.len() < MAX_REFUSALS {
                            refusals.spawn(refuse(stream, server.max_connections));
                        }
                        continue;
                    }
                    let open = GaugeGuard::new(&app.metrics.connections_open);
                    let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
                    let app = app.clone();
                    let builder = builder.clone();
                    let mut stopping = stopping_rx.clone();
                    let span = info_span!("conn", id, %peer);
                    connections.spawn(async move {
                        debug!("accepted");
                        // hyper-util waits for the first bytes (HTTP/1 or h2c?) with no
                        // deadline of its own: a client that never sends one would be held
                        // forever, and would hold up shutdown.
                        let mut first = [0u8; 1];
                        let deadline = app.config.server.header_read_timeout;
                        let first_bytes = tokio::time::timeout(deadline, stream.peek(&mut first));
                        tokio::select! {
                            peeked = first_bytes => match peeked {
                                Ok(Ok(n)) if n > 0 => {}
                                Ok(_) => return,
                                Err(_) => {
                                    debug!("no request within header_read_timeout; closing");
                                    return;
                                }
                            },
                            _ = stopping.changed() => return,
                        }
                        let (head, keepalive) = (deadline, app.config.server.keepalive_timeout);
                        let activity = Activity::new();
                        let svc_activity = activity.clone();
                        let svc = service_fn(move |req: Request<Incoming>| {
                            if req.version() == Version::HTTP_2 {
                                svc_activity.h2.store(true, Ordering::Relaxed);
                            }
                            super::routes::handle(app.clone(), peer, req, Busy::new(&svc_activity))
                        });
                        let io = Watched { io: stream, activity: activity.clone() };
                        let conn = builder.serve_connection(TokioIo::new(io), svc);
                        tokio::pin!(conn);
                        // Armed lazily: brought forward when the deadline moves
                        // earlier (a head begins), and when it fires early (a
                        // request has come and gone since), set again; so a
                        // busy connection resets it about once per deadline, not
                        // once per request.
                        let timer = tokio::time::sleep(keepalive);
                        tokio::pin!(timer);
                        let mut closing = false;
                        let ended = loop {
                            let watch = std::future::poll_fn(|cx| {
                                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                                    return Poll::Ready(Err(ended));
                                }
                                let due = match activity.deadline(head, keepalive) {
                                    Some(due) if !closing => due,
                                    _ => return Poll::Pending,
                                };
                                if due.at() < timer.deadline() {
                                    timer.as_mut().reset(due.at());
                                }
                                if timer.as_mut().poll(cx).is_ready() {
                                    if due.at() <= Instant::now() {
                                        return Poll::Ready(Ok(due));
                                    }
                                    timer.as_mut().reset(due.at());
                                    let _ = timer.as_mut().poll(cx);
                                }
                                Poll::Pending
                            });
                            tokio::select! {
                                watched = watch => match watched {
                                    Err(ended) => break ended,
                                    Ok(Deadline::Head(_)) => {
                                        debug!("request head not complete within header_read_timeout; closing");
                                        break Ok(());
                                    }
                                    Ok(Deadline::Idle(_)) => {
                                        debug!("no request for keepalive_timeout; closing");
                                        conn.as_mut().graceful_shutdown();
                                        closing = true;
                                    }
                                },
                                _ = stopping.changed(), if !closing => {
                                    conn.as_mut().graceful_shutdown();
                                    closing = true;
                                }
                            }
                        };
                        if let Err(e) = ended {
                            debug!(error = %e, "connection ended with an error");
                        }
                        drop(open);
                    }.instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stopping_tx.send(());
    app.begin_shutdown();
    let grace = app.config.server.shutdown_grace;
    info!(open = connections.len(), ?grace, "stopped accepting; draining open requests");
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!(open = connections.len(), "shutdown grace expired; closing the rest");
    }
    connections.shutdown().await;
    refusals.shutdown().await;
    app.finish_shutdown().await;
    info!("shutdown complete");
}

/// Answers a connection over `server.max_connections` with a 503 in the
/// API's error shape, then closes it. The request is read (and thrown away)
/// for up to a second first, so the close does not reset the connection
/// before the client has read the answer.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = api_error_body(
        &format!(
            "tether is serving its limit of {limit} connections (server.max_connections); retry shortly"
        ),
        "server_error",
        None,
        Some("too_many_connections"),
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        let mut scratch = [0u8; 4096];
        // Read what the client has sent so far (its request head), answer, then drain briefly.
        let _ = tokio::time::timeout(REFUSAL_READ, stream.read(&mut scratch)).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        while stream.read(&mut scratch).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// Refused connections being answered at once.
const MAX_REFUSALS: usize = 256;

/// How long a refused connection gets to send its request head before the 503.
const REFUSAL_READ: Duration = Duration::from_millis(100);

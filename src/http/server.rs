//! The accept loop and graceful shutdown.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1 and h2c)
//! in a task the loop owns (a `JoinSet`). A connection with no request in
//! progress for `header_read_timeout` is closed gracefully (hyper does it for
//! an idle HTTP/1.1 keep-alive connection; for h2c, which hyper keeps open
//! forever, the task does it with a GOAWAY). On shutdown the loop stops
//! accepting, asks every connection to finish its in-flight requests and
//! streams, waits up to `shutdown_grace`, then aborts what is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::api_error_body;
use crate::metrics::GaugeGuard;
use crate::{App, until};

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Requests in progress on one client connection, and when it last had none.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    busy: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// When the connection will have had no request in progress for
    /// `limit`; `None` while one is in progress.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)) + limit)
    }
}

/// One request in progress on its connection, until its response body is
/// done or dropped (a stream counts for as long as it runs).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
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
        .header_read_timeout(server.header_read_timeout)
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
                        let limit = app.config.server.header_read_timeout;
                        let activity = Activity::new();
                        let svc_activity = activity.clone();
                        let svc = service_fn(move |req| {
                            super::routes::handle(app.clone(), peer, req, Busy::new(&svc_activity))
                        });
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        let mut closing = false;
                        let ended = loop {
                            // Checked again when due: a request may have come and gone since.
                            let check = (!closing)
                                .then(|| activity.idle_deadline(limit).unwrap_or_else(|| Instant::now() + limit));
                            tokio::select! {
                                ended = conn.as_mut() => break ended,
                                _ = stopping.changed(), if !closing => {
                                    conn.as_mut().graceful_shutdown();
                                    closing = true;
                                }
                                () = until(check) => {
                                    if activity.idle_deadline(limit).is_some_and(|at| at <= Instant::now()) {
                                        debug!("no request for header_read_timeout; closing");
                                        conn.as_mut().graceful_shutdown();
                                        closing = true;
                                    }
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

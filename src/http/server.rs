//! The accept loop and graceful shutdown.
//!
//! Each connection is served by hyper-util's auto builder (HTTP/1.1 and h2c)
//! in a task the loop owns (a `JoinSet`). On shutdown the loop stops
//! accepting, asks every connection to finish its in-flight requests and
//! streams, waits up to `shutdown_grace`, then aborts what is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::App;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts connections on `listener` until `shutdown` resolves, then drains.
pub async fn run(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(app.config.server.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
                    let app = app.clone();
                    let svc = service_fn(move |req| super::routes::handle(app.clone(), peer, req));
                    let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                    let conn = graceful.watch(conn);
                    let span = info_span!("conn", id, %peer);
                    connections.spawn(async move {
                        debug!("accepted");
                        if let Err(e) = conn.await {
                            debug!(error = %e, "connection ended with an error");
                        }
                    }.instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    app.begin_shutdown();
    let grace = app.config.server.shutdown_grace;
    info!(open = connections.len(), ?grace, "stopped accepting; draining open requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        warn!(open = connections.len(), "shutdown grace expired; closing the rest");
    }
    connections.shutdown().await;
    app.finish_shutdown().await;
    info!("shutdown complete");
}

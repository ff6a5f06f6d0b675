//! The live decision stream behind `GET /debug/events`.
//!
//! Each finished turn's record is published as one JSON object on a bounded
//! broadcast channel. Publishing never waits: a reader that falls behind
//! loses the oldest records (counted in `tether_debug_events_dropped_total`
//! and announced to it as an SSE comment), and the proxy never slows down.
//! A reader's stream never ends on its own: on shutdown tether ends every
//! one (after the records already queued for it), so an open `tether tail`
//! does not hold the drain up for `server.shutdown_grace`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use tokio::sync::{broadcast, watch};

use crate::http::body::{self, Body};
use crate::metrics::Metrics;

/// Records buffered per reader before the oldest are dropped.
pub const BUFFER: usize = 1024;

/// The publisher side.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<(u128, Arc<str>)>,
    /// Set once, on shutdown: every reader's stream ends.
    closing: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events::with_capacity(BUFFER)
    }
}

impl Events {
    /// A stream that buffers `capacity` records per reader.
    pub fn with_capacity(capacity: usize) -> Events {
        Events { tx: broadcast::channel(capacity.max(1)).0, closing: watch::channel(false).0 }
    }

    /// Ends every reader's stream, now and for readers still to come, once
    /// the records already queued for it are sent.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Publishes one JSON record of `tenant`'s (a no-op without readers).
    pub fn publish(&self, tenant: u128, json: impl FnOnce() -> String) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send((tenant, Arc::from(json())));
        }
    }

    /// Number of connected readers.
    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// An SSE response streaming every record from now on.
    /// With `only`, just that tenant's records (a reader that sent
    /// credentials sees its own turns and no one else's).
    pub fn sse(&self, metrics: Arc<Metrics>, only: Option<u128>) -> Response<Body> {
        let mut rx = self.tx.subscribe();
        let mut closing = self.closing.subscribe();
        let (out, body) = body::channel(16);
        tokio::spawn(async move {
            if out.send(Bytes::from_static(b": tether decision stream\n\n")).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    biased;
                    next = rx.recv() => Some(next),
                    // (The guard `wait_for` returns is not held across an await.)
                    _ = async { closing.wait_for(|closing| *closing).await.map(|_| ()) } => None,
                };
                let Some(next) = next else {
                    let _ = out.send(Bytes::from_static(b": tether is shutting down\n\n")).await;
                    return;
                };
                let chunk = match next {
                    Ok((tenant, _)) if only.is_some_and(|t| t != tenant) => continue,
                    Ok((_, json)) => Bytes::from(format!("event: turn\ndata: {json}\n\n")),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics.events_dropped.inc_by(n);
                        Bytes::from(format!(": dropped {n} records (reader too slow)\n\n"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if out.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(body);
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

//! Routes: `/healthz`, the managed `POST /v1/responses`, and pass-through of
//! every other `/v1/…` route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{Instrument, debug, info_span};

use super::body::{self, Body, BoxError};
use crate::App;
use crate::error::ProxyError;
use crate::metrics::GaugeGuard;

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// The API prefix tether serves; everything under it maps onto `upstream.base_url`.
pub const API_PREFIX: &str = "/v1";

/// Serves one request. Errors are answered in the API's JSON shape. `busy`
/// marks the request in progress on its connection until the response body
/// is done.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    busy: super::server::Busy,
) -> Result<Response<Body>, Infallible> {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    // A /debug/events reader stays open for as long as it likes: not a request in flight.
    let in_flight =
        (req.uri().path() != "/debug/events").then(|| GaugeGuard::new(&app.metrics.requests_in_flight));
    let span = info_span!("req", id, method = %req.method(), path = %req.uri().path());
    let result = route(app, peer, req).instrument(span.clone()).await;
    let resp = result.unwrap_or_else(|e| {
        span.in_scope(|| debug!(status = e.status().as_u16(), error = %e, "answered with an error"));
        body::error(&e)
    });
    Ok(resp.map(|b| body::guarded(b, (in_flight, busy))))
}

async fn route(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => Ok(body::json(StatusCode::OK, r#"{"status":"ok"}"#)),
        (&Method::GET, "/metrics" | "/debug/sessions" | "/debug/events") => {
            if !peer.ip().is_loopback() && !app.config.server.debug_remote {
                return Err(ProxyError::NotFound(path.to_string()));
            }
            // A reader that sends credentials sees only its own tenant's
            // sessions and turns; one that sends none is the operator.
            let only = req
                .headers()
                .contains_key(header::AUTHORIZATION)
                .then(|| app.managed.tenant(&crate::proxy::credentials(req.headers(), None)).0);
            Ok(debug_route(&app, path, only))
        }
        (&Method::POST, "/v1/responses") => crate::proxy::responses(&app, req).await,
        (&Method::GET, "/v1/responses") if wants_websocket(&req) => Ok(websocket_refused()),
        _ if path == API_PREFIX || path.starts_with("/v1/") => passthrough(&app, peer, req).await,
        _ => Err(ProxyError::NotFound(path.to_string())),
    }
}

/// A WebSocket upgrade (a client in the API's WebSocket mode).
fn wants_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

/// A client that speaks WebSocket mode itself is answered as a server
/// without the mode answers (426, PROTOCOL.md §2), so it falls back to
/// plain HTTP at once, where tether gives it the continuation; nothing is
/// sent upstream (a pass-through would reach the API as a bare GET).
fn websocket_refused() -> Response<Body> {
    tracing::info!(
        "WebSocket upgrade refused with 426: the client falls back to HTTP (turn its WebSocket mode off to skip the attempt)"
    );
    let message = "tether serves the Responses API over HTTP and keeps the WebSocket to the upstream \
                   itself: turn this client's WebSocket mode off (Codex: supports_websockets).";
    let body =
        crate::error::api_error_body(message, "invalid_request_error", None, Some("websocket_not_supported"));
    body::json(StatusCode::UPGRADE_REQUIRED, body)
}

/// `/metrics`, `/debug/sessions`, `/debug/events`: no content, no keys;
/// the debug views limited to one tenant with `only`.
fn debug_route(app: &Arc<App>, path: &str, only: Option<u128>) -> Response<Body> {
    match path {
        "/metrics" => {
            let pool = app.managed.pool.stats();
            let sessions = app.managed.store().len();
            let text = app.metrics.render(&pool, sessions);
            let mut resp = Response::new(body::full(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/debug/sessions" => {
            let now = std::time::Instant::now();
            let (sessions, memory) = {
                let store = app.managed.store();
                (store.snapshot(now), store.approx_memory_bytes())
            };
            let sessions: Vec<_> =
                sessions.into_iter().filter(|s| only.is_none_or(|t| t == s.tenant_id)).collect();
            let pool = app.managed.pool.stats();
            let doc = serde_json::json!({
                "sessions": sessions,
                "live": sessions.len(),
                "approx_memory_bytes": memory,
                "sockets_open": only.map_or(pool.open, |t| pool.per_tenant.get(&t).copied().unwrap_or(0)),
                "sockets_opened": pool.opened_total,
            });
            body::json(StatusCode::OK, doc.to_string())
        }
        _ => app.events.sse(app.metrics.clone(), only),
    }
}

/// Streams `req` to the upstream and its answer back, untouched.
pub async fn passthrough(
    app: &App,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let limit = app.config.server.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let suffix = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .strip_prefix(API_PREFIX)
        .unwrap_or("/")
        .to_string();
    let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
    let resp = app.http.forward(req, &suffix).await?;
    debug!(status = resp.status().as_u16(), "passed through");
    Ok(resp)
}

//! The HTTP fallback: the client's request, byte for byte, over plain HTTPS.
//!
//! Used when WebSocket mode is refused (404/426, then for a cool-down), when
//! the upstream cannot be reached over WebSocket, when the pool is full (if
//! `upstream.fallback_http` is on), and for requests WebSocket mode cannot
//! carry (`background: true`, `conversation`). Always correct: the upstream
//! sees exactly what the client sent.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};

use super::record::{Route, TurnRecord};
use crate::App;
use crate::error::ProxyError;
use crate::http::body::Body;

/// Sends `body` to `{base_url}/responses` and streams the answer back.
pub async fn forward(
    app: &App,
    headers: &HeaderMap,
    body: Bytes,
    reason: &'static str,
    record: &mut TurnRecord,
) -> Result<Response<Body>, ProxyError> {
    record.route = Route::HttpFallback;
    record.reason = Some(reason);
    record.items_up = record.items_in;
    record.bytes_up = body.len();
    let result = app.http.post("/responses", headers.clone(), body).await;
    record.status = match &result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status().as_u16(),
    };
    record.outcome = if result.is_ok() { "http" } else { "error" };
    record.emit(app);
    let mut resp = result?;
    resp.headers_mut().insert("x-tether-route", HeaderValue::from_static(Route::HttpFallback.label()));
    Ok(resp)
}

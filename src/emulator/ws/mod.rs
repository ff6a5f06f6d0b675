//! WebSocket mode on `/v1/responses`: the upgrade (or its refusal) here,
//! the connection's request loop in [`conn`].

mod conn;

use std::sync::Arc;

use ::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::config::WsMode;
use super::error::ApiError;
use super::server::{Body, error_response, full};
use super::state::Shared;

/// Whether the request asks for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn refusal(status: u16) -> ApiError {
    let (code, message) = match status {
        426 => ("upgrade_required", "WebSocket mode is not available; use HTTP."),
        404 => ("not_found", "Not found."),
        _ => ("upgrade_refused", "The WebSocket upgrade was refused."),
    };
    let mut e = ApiError::with_status(status, code);
    e.message = message.into();
    e
}

/// Answers the upgrade with 101 and starts the connection, or refuses it.
pub(crate) fn upgrade(shared: Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    match shared.config.ws {
        WsMode::Enabled => {}
        WsMode::Refuse426 => return error_response(&refusal(426)),
        WsMode::Refuse404 => return error_response(&refusal(404)),
    }
    if let Some(status) = shared.take_refusal() {
        shared.with_stats(|s| s.faults_applied += 1);
        return error_response(&refusal(status));
    }
    let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return error_response(&ApiError::invalid("Missing Sec-WebSocket-Key.", None, None));
    };
    let Ok(accept) = HeaderValue::from_str(&key) else {
        return error_response(&ApiError::invalid("Bad Sec-WebSocket-Key.", None, None));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    shared.with_stats(|s| s.ws_connections += 1);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // tungstenite zero-fills the free part of its read buffer
                // before every read: 128 KiB by default, a 16 KiB window
                // here (larger frames still arrive whole; the buffer grows).
                let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                        .await;
                conn::run(shared, socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "emulator upgrade failed"),
        }
    });
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

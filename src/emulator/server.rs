//! The accept loop and the routes: `/v1/responses` (POST, GET upgrade),
//! `/v1/responses/{id}`, `/v1/models`, `/_emulator/contexts`, `/_emulator/stats`.

use std::convert::Infallible;
use std::sync::Arc;

use ::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use super::cost::pause;
use super::error::ApiError;
use super::state::Shared;
use super::{http, ws};

/// The body type of every emulator response.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(connection(stream, shared.clone())); }
                Err(e) => tracing::debug!(error = %e, "emulator accept failed"),
            },
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    // Like any real server: one event per small write must not wait for
    // Nagle's algorithm (40 ms with delayed ACKs).
    let _ = stream.set_nodelay(true);
    let mut shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    pause(shared.config.cost.handshake).await;
    let svc_shared = shared.clone();
    let service = service_fn(move |req| route(svc_shared.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        result = conn => if let Err(e) = result { tracing::debug!(error = %e, "emulator connection ended") },
        _ = shutdown.changed() => {}
    }
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let response = match (&method, path.as_str()) {
        (&Method::GET, "/_emulator/contexts") => json_response(200, &json!(shared.records())),
        (&Method::GET, "/_emulator/stats") => json_response(200, &json!(shared.stats())),
        _ if path.starts_with("/v1/") && !authorized(&shared, req.headers()) => {
            error_response(&ApiError::unauthorized())
        }
        (&Method::GET, "/v1/responses") if ws::is_upgrade(req.headers()) => ws::upgrade(shared, req),
        (&Method::POST, "/v1/responses") => http::create(shared, req).await,
        (&Method::GET, "/v1/models") => json_response(200, &models()),
        (&Method::GET, p) if p.starts_with("/v1/responses/") => {
            let id = &p["/v1/responses/".len()..];
            match shared.stored(id) {
                Some(held) => json_response(200, &held.response),
                None => error_response(&ApiError {
                    status: 404,
                    kind: "invalid_request_error".into(),
                    code: None,
                    message: format!("No response found with id '{id}'."),
                    param: None,
                }),
            }
        }
        _ => error_response(&ApiError {
            status: 404,
            kind: "invalid_request_error".into(),
            code: None,
            message: format!("Invalid URL ({method} {path})"),
            param: None,
        }),
    };
    Ok(response)
}

/// Whether the request carries an accepted `Authorization: Bearer <key>`.
pub(crate) fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key)
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (key, &shared.config.accepted_keys) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(key), Some(keys)) => keys.iter().any(|k| k == key),
    }
}

fn models() -> Value {
    let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "tether-emulator"});
    json!({"object": "list", "data": [model("gpt-5"), model("gpt-5-mini"), model("gpt-5-codex")]})
}

/// A full body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(super::events::wire_text(value)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// An API error as an HTTP response.
pub(crate) fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.status, &error.http_body())
}

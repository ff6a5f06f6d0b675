//! Errors a client sees, and their HTTP status and JSON body, in one place.
//!
//! Every error, whatever side produced it, reaches the client as the API's
//! own shape `{"error":{"message","type","param","code"}}` so SDKs raise their
//! usual exception types. [`ProxyError::status`] and [`ProxyError::body`] are
//! the only places that choose them.

use bytes::Bytes;
use http::StatusCode;

/// Builds the API's error body: `{"error":{"message","type","param","code"}}`.
pub fn api_error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    Bytes::from(body.to_string())
}

/// A request that tether itself answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client's request is malformed (bad JSON, wrong shape).
    #[error("{message}")]
    BadRequest {
        /// Human-readable reason.
        message: String,
        /// The offending field, when there is one.
        param: Option<&'static str>,
    },
    /// The request body is larger than `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The client did not send its whole body within `server.body_read_timeout`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The client's body could not be read (it hung up or sent garbage framing).
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// No such route on tether.
    #[error("no route for {0}")]
    NotFound(String),
    /// The upstream could not be reached (connect, TLS, DNS).
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// The upstream did not answer in time.
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The upstream failed after the exchange began.
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    /// The upstream answered with an error status: relayed as is.
    #[error("upstream answered {status}")]
    UpstreamStatus {
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's body (already in the API's shape).
        body: Bytes,
    },
    /// No upstream socket became free within `pool.queue_timeout`.
    #[error("all upstream connections are busy; try again")]
    Overloaded,
    /// tether is shutting down.
    #[error("tether is shutting down")]
    ShuttingDown,
}

impl ProxyError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } | ProxyError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamStatus { status, .. } => *status,
            ProxyError::Overloaded | ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body the client gets.
    pub fn body(&self) -> Bytes {
        let message = self.to_string();
        let (kind, param, code) = match self {
            ProxyError::BadRequest { param, .. } => ("invalid_request_error", *param, None),
            ProxyError::BodyRead(_) => ("invalid_request_error", None, None),
            ProxyError::BodyTimeout(_) => ("invalid_request_error", None, Some("request_timeout")),
            ProxyError::BodyTooLarge { .. } => ("invalid_request_error", None, Some("request_too_large")),
            ProxyError::NotFound(_) => ("invalid_request_error", None, Some("not_found")),
            ProxyError::UpstreamUnreachable(_) => ("server_error", None, Some("upstream_unreachable")),
            ProxyError::UpstreamTimeout(_) => ("server_error", None, Some("upstream_timeout")),
            ProxyError::UpstreamFailed(_) => ("server_error", None, Some("upstream_failed")),
            ProxyError::UpstreamStatus { body, .. } => return body.clone(),
            ProxyError::Overloaded => ("server_error", None, Some("tether_overloaded")),
            ProxyError::ShuttingDown => ("server_error", None, Some("tether_shutting_down")),
        };
        api_error_body(&message, kind, param, code)
    }
}

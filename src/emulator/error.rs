//! Errors the emulator answers with, in the real service's three shapes:
//! the HTTP body, the WebSocket error frame and the SSE `error` event.

use serde_json::{Value, json};

/// An API error: status, `type`, `code`, `message`, `param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (also carried by the WebSocket error frame).
    pub status: u16,
    /// `invalid_request_error`, `rate_limit_error`, `server_error`, …
    pub kind: String,
    /// Machine-readable code, if any.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// The offending parameter, if any.
    pub param: Option<String>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        ApiError {
            status: 400,
            kind: "invalid_request_error".into(),
            code: code.map(str::to_owned),
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// A 400 about `input`.
    pub fn input(message: impl Into<String>) -> Self {
        Self::invalid(message, Some("input"), None)
    }

    /// The `previous_response_not_found` error.
    pub fn previous_not_found(id: &str) -> Self {
        Self::invalid(
            format!("Previous response with id '{id}' not found."),
            Some("previous_response_id"),
            Some("previous_response_not_found"),
        )
    }

    /// An error with a given status and code (from faults); the type follows the status.
    pub fn with_status(status: u16, code: &str) -> Self {
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        ApiError {
            status,
            kind: kind.into(),
            code: Some(code.to_owned()),
            message: format!("Emulated error: {code}."),
            param: None,
        }
    }

    /// 429 `rate_limit_exceeded`.
    pub fn rate_limited() -> Self {
        let mut e = Self::with_status(429, "rate_limit_exceeded");
        e.message = "Rate limit reached. Please try again later.".into();
        e
    }

    /// 401 for a missing or unaccepted key.
    pub fn unauthorized() -> Self {
        ApiError {
            status: 401,
            kind: "invalid_request_error".into(),
            code: Some("invalid_api_key".into()),
            message: "Incorrect API key provided.".into(),
            param: None,
        }
    }

    fn inner(&self) -> Value {
        json!({"type": self.kind, "code": self.code, "message": self.message, "param": self.param})
    }

    /// `{"error":{…}}`, the HTTP body.
    pub fn http_body(&self) -> Value {
        json!({ "error": self.inner() })
    }

    /// `{"type":"error","status":…,"error":{…}}`, the WebSocket frame.
    pub fn ws_frame(&self) -> Value {
        json!({"type": "error", "status": self.status, "error": self.inner()})
    }

    /// The flat SSE `error` event (`sequence_number` is added by the writer).
    pub fn sse_event(&self) -> Value {
        json!({"type": "error", "code": self.code, "message": self.message, "param": self.param})
    }
}

//! Error mapping: upstream error codes to HTTP statuses, error frames and
//! `response.failed` errors to the API's error body, and the SSE `error`
//! event tether emits itself.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use super::TranslateError;
use crate::error::api_error_body;

/// The HTTP status for an upstream error `code`, used when a frame carries no
/// status of its own (a `response.failed`, a flat `error` frame).
///
/// The service documents few of these; the mapping follows its HTTP answers:
/// rate and quota limits are 429, overload is 503, request problems (bad
/// prompt, bad image, missing parent, context too long) are 400, anything
/// else, or no code at all, is 500.
pub fn status_for_code(code: Option<&str>) -> u16 {
    match code.unwrap_or("") {
        "rate_limit_exceeded" | "insufficient_quota" => 429,
        "server_is_overloaded" | "slow_down" | "service_unavailable" => 503,
        "invalid_prompt"
        | "invalid_request_error"
        | "invalid_image"
        | "invalid_image_format"
        | "invalid_image_url"
        | "invalid_base64_image"
        | "image_too_large"
        | "image_too_small"
        | "image_parse_error"
        | "image_content_policy_violation"
        | "unsupported_image_media_type"
        | "empty_image_file"
        | "context_length_exceeded"
        | "previous_response_not_found"
        | "invalid_stream_id"
        | "websocket_connection_limit_reached"
        | "websocket_stream_limit_reached" => 400,
        "invalid_api_key" => 401,
        _ => 500,
    }
}

/// The error `type` the API reports for a status.
fn kind_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// The inner error object, in either the nested or the flat frame shape.
#[derive(Deserialize, Default)]
struct ErrorFields<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    param: Option<Cow<'a, str>>,
}

/// An `error` frame: `{"type":"error","status":400,"error":{…}}` (nested) or
/// `{"type":"error","code","message","param"}` (flat).
#[derive(Deserialize)]
struct ErrorFrame<'a> {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default, borrow)]
    error: Option<ErrorFields<'a>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    param: Option<Cow<'a, str>>,
}

/// A request-scoped error taken from an upstream `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The frame's `status`, or 500 when it has none.
    pub status: u16,
    /// The error code (`previous_response_not_found`, …), when given.
    pub code: Option<String>,
    /// `{"error":{"message","type","param","code"}}`.
    pub body: Bytes,
}

/// Reads an upstream `error` frame (nested or flat shape) into a status, code
/// and the API's error body.
pub fn error_body_from_frame(frame: &str) -> Result<FrameError, TranslateError> {
    let f: ErrorFrame<'_> =
        serde_json::from_str(frame).map_err(|e| TranslateError::Malformed(e.to_string()))?;
    let nested = f.error.unwrap_or_default();
    let code = nested.code.or(f.code);
    let message = nested.message.or(f.message);
    let param = nested.param.or(f.param);
    let status = f.status.unwrap_or(500);
    let kind = nested.kind.unwrap_or(Cow::Borrowed(kind_for_status(status)));
    let body = api_error_body(
        message.as_deref().unwrap_or("upstream error"),
        &kind,
        param.as_deref(),
        code.as_deref(),
    );
    Ok(FrameError { status, code: code.map(Cow::into_owned), body })
}

/// The status and error body for a `response.failed` Response's `error`
/// object (`{"code","message"}`), or a generic server error when absent.
pub(crate) fn failed_body(error: Option<&str>) -> (u16, Bytes) {
    let fields: ErrorFields<'_> = error.and_then(|e| serde_json::from_str(e).ok()).unwrap_or_default();
    let status = status_for_code(fields.code.as_deref());
    let body = api_error_body(
        fields.message.as_deref().unwrap_or("the response failed"),
        kind_for_status(status),
        fields.param.as_deref(),
        fields.code.as_deref(),
    );
    (status, body)
}

/// An SSE `error` event in the service's flat shape, for a failure tether
/// itself detects mid-stream (socket lost, timeout):
/// `event: error\ndata: {"type":"error","code","message","param":null}`.
pub fn sse_error_event(message: &str, code: Option<&str>) -> Bytes {
    sse_error_event_seq(message, code, None)
}

/// [`sse_error_event`] with a `sequence_number`, when the stream had some.
pub fn sse_error_event_seq(message: &str, code: Option<&str>, seq: Option<u64>) -> Bytes {
    flat_error_event(message.into(), code.into(), serde_json::Value::Null, seq)
}

/// The flat `error` event of a plain-HTTP stream, from its fields.
pub(crate) fn flat_error_event(
    message: serde_json::Value,
    code: serde_json::Value,
    param: serde_json::Value,
    seq: Option<u64>,
) -> Bytes {
    let mut data = serde_json::json!({
        "type": "error", "code": code, "message": message, "param": param,
    });
    if let (Some(n), Some(obj)) = (seq, data.as_object_mut()) {
        obj.insert("sequence_number".into(), n.into());
    }
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

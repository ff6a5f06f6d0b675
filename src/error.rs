//! Errors in the API's JSON shape.
//!
//! Every error a client sees, whatever side produced it, is a JSON body
//! `{"error":{"message","type","param","code"}}` chosen here, in one place.

use bytes::Bytes;

/// Builds the API's error body: `{"error":{"message","type","param","code"}}`.
pub fn api_error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    Bytes::from(body.to_string())
}

//! Judging one answer: a response, a clean error in the API's shape, or bad
//! (anything a client could not rely on).

use serde_json::Value;

/// What came back for one request.
#[derive(Debug, Default)]
pub struct Exchange {
    /// HTTP status.
    pub status: u16,
    /// `x-tether-route`.
    pub route: Option<String>,
    /// `content-type`.
    pub content_type: String,
    /// The body as far as it was read.
    pub body: Vec<u8>,
    /// The body ended with a transport error (not a clean end).
    pub cut: Option<String>,
}

/// The verdict on one answer.
#[derive(Debug)]
pub enum Verdict {
    /// A completed Response object.
    Ok(Value),
    /// An error a client can handle: a non-200 JSON error, or a stream that
    /// ends with `error` / `response.failed` / `response.incomplete`.
    Clean(String),
    /// Broken: a client could not rely on it.
    Bad(String),
}

const TERMINAL: [&str; 4] = ["response.completed", "response.failed", "response.incomplete", "error"];

/// Judges `x` for a request sent with `stream`.
pub fn judge(x: &Exchange, stream: bool) -> Verdict {
    let fallback = x.route.as_deref() == Some("http_fallback");
    if let Some(why) = &x.cut {
        // On the HTTP fallback tether relays the upstream's body as is, so an
        // upstream that cuts it cuts the client's too (faithful, not tether's).
        return if fallback {
            Verdict::Clean("fallback_body_cut".into())
        } else {
            Verdict::Bad(format!("body cut ({why}), status {}, route {:?}", x.status, x.route))
        };
    }
    if x.status != 200 {
        return api_error(x);
    }
    let (want, got) = (if stream { "text/event-stream" } else { "application/json" }, &x.content_type);
    if !got.starts_with(want) {
        return Verdict::Bad(format!("200 with content-type {got:?}, wanted {want}"));
    }
    if stream { sse(&x.body) } else { json(&x.body) }
}

fn api_error(x: &Exchange) -> Verdict {
    let shaped = serde_json::from_slice::<Value>(&x.body)
        .ok()
        .filter(|v| v["error"]["message"].is_string() && v["error"]["type"].is_string());
    match shaped {
        Some(v) if x.content_type.starts_with("application/json") => {
            let code = v["error"]["code"].as_str().unwrap_or("-");
            Verdict::Clean(format!("{} {code}", x.status))
        }
        _ => Verdict::Bad(format!(
            "status {} without an API-shaped JSON error: {:?}",
            x.status,
            String::from_utf8_lossy(&x.body[..x.body.len().min(200)])
        )),
    }
}

fn json(body: &[u8]) -> Verdict {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["object"] == "response" && v["status"] == "completed" => Verdict::Ok(v),
        Ok(v) => Verdict::Bad(format!("200 JSON that is not a completed response: status {}", v["status"])),
        Err(e) => Verdict::Bad(format!("200 body is not JSON: {e}")),
    }
}

/// An SSE body: well-formed events, one response (never two spliced), in
/// order, ending with exactly one terminal event.
fn sse(body: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(body) else {
        return Verdict::Bad("stream is not UTF-8".into());
    };
    if !text.ends_with("\n\n") {
        return Verdict::Bad("stream ends in the middle of an event".into());
    }
    let mut response_id: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut terminal: Option<Value> = None;
    for (n, block) in text.split("\n\n").filter(|b| !b.is_empty()).enumerate() {
        if terminal.is_some() {
            return Verdict::Bad("event after the terminal event".into());
        }
        let (mut name, mut data) = (None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v);
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v);
            } else if !line.starts_with(':') {
                return Verdict::Bad(format!("unexpected SSE line {line:?}"));
            }
        }
        let Some(event) = data.and_then(|d| serde_json::from_str::<Value>(d).ok()) else {
            return Verdict::Bad(format!("event {n} has no JSON data"));
        };
        let kind = event["type"].as_str().unwrap_or_default();
        if name.is_some_and(|name| name != kind) {
            return Verdict::Bad(format!("event name {name:?} for data of type {kind:?}"));
        }
        if let Some(seq) = event["sequence_number"].as_u64() {
            if last_seq.is_some_and(|last| seq <= last) {
                return Verdict::Bad(format!("sequence_number {seq} after {last_seq:?}"));
            }
            last_seq = Some(seq);
        }
        if (kind == "response.created") != (n == 0) && !(n == 0 && TERMINAL.contains(&kind)) {
            return Verdict::Bad(format!(
                "event {n} is {kind}: two responses spliced, or no response.created"
            ));
        }
        if let Some(id) = event["response"]["id"].as_str() {
            match &response_id {
                Some(first) if first != id => {
                    return Verdict::Bad(format!("two responses spliced: {first} then {id}"));
                }
                Some(_) => {}
                None => response_id = Some(id.to_string()),
            }
        }
        if TERMINAL.contains(&kind) {
            terminal = Some(event);
        }
    }
    match terminal {
        None => Verdict::Bad("stream ended without a terminal event".into()),
        Some(e) if e["type"] == "response.completed" => Verdict::Ok(e["response"].clone()),
        Some(e) => {
            let code = e["code"].as_str().or(e["response"]["error"]["code"].as_str()).unwrap_or("-");
            Verdict::Clean(format!("{} {code}", e["type"].as_str().unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, seq: u64, id: &str) -> String {
        format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq},\"response\":{{\"id\":\"{id}\",\"status\":\"x\"}}}}\n\n"
        )
    }

    fn stream(body: String) -> Exchange {
        Exchange {
            status: 200,
            content_type: "text/event-stream".into(),
            body: body.into_bytes(),
            ..Default::default()
        }
    }

    #[test]
    fn streams() {
        let ok = ev("response.created", 0, "a")
            + &ev("response.in_progress", 1, "a")
            + &ev("response.completed", 2, "a");
        assert!(matches!(judge(&stream(ok.clone()), true), Verdict::Ok(_)));
        let spliced = ev("response.created", 0, "a") + &ev("response.completed", 1, "b");
        assert!(matches!(judge(&stream(spliced), true), Verdict::Bad(_)));
        let twice = ev("response.created", 0, "a") + &ev("response.created", 1, "a");
        assert!(matches!(judge(&stream(twice), true), Verdict::Bad(_)));
        let open = ev("response.created", 0, "a") + &ev("response.in_progress", 1, "a");
        assert!(matches!(judge(&stream(open), true), Verdict::Bad(_)));
        let error = ev("response.created", 0, "a")
            + "event: error\ndata: {\"type\":\"error\",\"sequence_number\":1,\"code\":\"x\"}\n\n";
        assert!(matches!(judge(&stream(error), true), Verdict::Clean(_)));
        let after = ok + &ev("response.in_progress", 3, "a");
        assert!(matches!(judge(&stream(after), true), Verdict::Bad(_)));
    }

    #[test]
    fn errors() {
        let x = |status, body: &str| Exchange {
            status,
            content_type: "application/json".into(),
            body: body.as_bytes().to_vec(),
            ..Default::default()
        };
        let shaped = r#"{"error":{"message":"m","type":"server_error","code":"c","param":null}}"#;
        assert!(matches!(judge(&x(502, shaped), false), Verdict::Clean(_)));
        assert!(matches!(judge(&x(502, "bad gateway"), false), Verdict::Bad(_)));
        assert!(matches!(
            judge(&x(200, r#"{"object":"response","status":"completed"}"#), false),
            Verdict::Ok(_)
        ));
    }
}

//! The client's side of a cell: sending turns within the deadline, hanging
//! up, and checking every answer's shape; and the oracle.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tether::emulator::EmulatorHandle;

use super::common::{self, Conversation};
use super::{Check, DEADLINE};

/// One HTTP exchange, as the client saw it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) route: Option<String>,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
    pub(crate) took: Duration,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a cell sent: inputs of every request, and (id, input) of every success.
#[derive(Default)]
pub(crate) struct Sent {
    pub(crate) inputs: Vec<Vec<Value>>,
    pub(crate) ok: Vec<(String, Vec<Value>)>,
}

/// Sends the conversation's next request within [`DEADLINE`].
pub(crate) async fn send(c: &Conversation, sent: &mut Sent) -> Check<Reply> {
    sent.inputs.push(c.input.clone());
    let req = http::Request::post(format!("{}/responses", c.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", c.key))
        .body(Full::new(Bytes::from(c.body().to_string())))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let exchange = async {
        let resp = common::client().request(req).await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let route = header("x-tether-route");
        let content_type = header("content-type").unwrap_or_default();
        let body = resp.into_body().collect().await.map_err(|e| format!("body failed: {e}"))?.to_bytes();
        Ok::<_, String>(Reply { status, route, content_type, body, took: Duration::ZERO })
    };
    match tokio::time::timeout(DEADLINE, exchange).await {
        Err(_) => Err(format!("no complete answer within {DEADLINE:?} (hang)")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(reply)) => Ok(Reply { took: started.elapsed(), ..reply }),
    }
}

/// The SSE events of a body: (event name, data), checking that every data
/// line is JSON whose `type` is the event name.
pub(crate) fn sse_events(reply: &Reply) -> Check<Vec<(String, Value)>> {
    ensure!(
        reply.content_type.starts_with("text/event-stream"),
        "content-type {:?} for a stream",
        reply.content_type
    );
    let text = reply.text();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block.lines().find_map(|l| l.strip_prefix("event: "));
        let data = block.lines().find_map(|l| l.strip_prefix("data: "));
        let (Some(name), Some(data)) = (name, data) else {
            return Err(format!("not an SSE event: {block:?}"));
        };
        let value: Value =
            serde_json::from_str(data).map_err(|e| format!("event data is not JSON ({e}): {data}"))?;
        ensure!(value["type"] == name, "event {name} carries type {}", value["type"]);
        events.push((name.to_string(), value));
    }
    Ok(events)
}

/// Events before the terminal one: response events numbered 0, 1, 2, …
pub(crate) fn check_prefix(events: &[(String, Value)]) -> Check {
    for (n, (name, value)) in events.iter().enumerate() {
        ensure!(name.starts_with("response."), "unexpected event {name} at {n}");
        ensure!(value["sequence_number"] == n, "event {n} ({name}) numbered {}", value["sequence_number"]);
        ensure!(
            !matches!(name.as_str(), "response.completed" | "response.failed" | "response.incomplete"),
            "terminal event {name} before the end"
        );
    }
    Ok(())
}

/// A 200 with the completed Response; returns it.
pub(crate) fn check_answer(reply: &Reply, stream: bool, route: &str) -> Check<Value> {
    ensure!(reply.status == 200, "status {} (route {:?}): {}", reply.status, reply.route, reply.text());
    ensure!(reply.route.as_deref() == Some(route), "route {:?}, want {route}", reply.route);
    let response = if stream {
        let events = sse_events(reply)?;
        let Some(((last, done), head)) = events.split_last().map(|(l, h)| ((&l.0, &l.1), h)) else {
            return Err("empty stream".into());
        };
        check_prefix(head)?;
        ensure!(last == "response.completed", "stream ends with {last}");
        ensure!(
            done["sequence_number"] == head.len(),
            "response.completed numbered {}",
            done["sequence_number"]
        );
        done["response"].clone()
    } else {
        ensure!(reply.content_type == "application/json", "content-type {:?}", reply.content_type);
        serde_json::from_slice(&reply.body).map_err(|e| format!("JSON body: {e}"))?
    };
    ensure!(response["object"] == "response", "not a Response: {response}");
    ensure!(response["status"] == "completed", "Response status {}", response["status"]);
    ensure!(
        response["id"].as_str().is_some_and(|id| id.starts_with("resp_")),
        "Response id {}",
        response["id"]
    );
    // tether chains with its own ids upstream; the client sent none.
    ensure!(
        response["previous_response_id"].is_null(),
        "previous_response_id {}",
        response["previous_response_id"]
    );
    Ok(response)
}

/// `{"error":{"message","type","param","code"}}` with this status, as JSON.
pub(crate) fn check_error(reply: &Reply, status: u16, kind: &str, code: &str, route: Option<&str>) -> Check {
    ensure!(reply.status == status, "status {}, want {status}: {}", reply.status, reply.text());
    ensure!(reply.content_type == "application/json", "content-type {:?}, want JSON", reply.content_type);
    ensure!(reply.route.as_deref() == route, "route {:?}, want {route:?}", reply.route);
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("error body: {e}"))?;
    let e = &v["error"];
    ensure!(e["message"].is_string(), "error.message missing: {v}");
    ensure!(e["type"] == kind, "error.type {}, want {kind}", e["type"]);
    ensure!(e["code"] == code, "error.code {}, want {code}", e["code"]);
    ensure!(e.get("param").is_some_and(|p| p.is_null() || p.is_string()), "error.param: {v}");
    Ok(())
}

/// 200 SSE: the response's first events, then the flat `error` event.
pub(crate) fn check_sse_error(reply: &Reply, route: &str, code: &str) -> Check {
    ensure!(reply.status == 200, "status {}: {}", reply.status, reply.text());
    ensure!(reply.route.as_deref() == Some(route), "route {:?}, want {route}", reply.route);
    let events = sse_events(reply)?;
    let Some(((last, err), head)) = events.split_last().map(|(l, h)| ((&l.0, &l.1), h)) else {
        return Err("empty stream".into());
    };
    ensure!(!head.is_empty(), "the error came before any event; a JSON error was due");
    check_prefix(head)?;
    ensure!(last == "error", "stream ends with {last}, want error");
    // The flat plain-HTTP shape, numbered after the last event.
    ensure!(err["code"] == code, "error code {}, want {code}", err["code"]);
    ensure!(err["message"].is_string(), "error message: {err}");
    ensure!(err.get("param").is_some(), "error param missing: {err}");
    ensure!(err.get("error").is_none(), "nested error object in a plain-HTTP stream: {err}");
    ensure!(err["sequence_number"] == head.len(), "error numbered {}", err["sequence_number"]);
    Ok(())
}

/// 200 SSE ending in the upstream's `response.failed`.
pub(crate) fn check_sse_failed(reply: &Reply, route: &str) -> Check {
    ensure!(reply.status == 200, "status {}: {}", reply.status, reply.text());
    ensure!(reply.route.as_deref() == Some(route), "route {:?}, want {route}", reply.route);
    let events = sse_events(reply)?;
    let Some(((last, failed), head)) = events.split_last().map(|(l, h)| ((&l.0, &l.1), h)) else {
        return Err("empty stream".into());
    };
    check_prefix(head)?;
    ensure!(last == "response.failed", "stream ends with {last}");
    ensure!(failed["response"]["status"] == "failed", "failed Response: {failed}");
    ensure!(
        failed["sequence_number"] == head.len(),
        "response.failed numbered {}",
        failed["sequence_number"]
    );
    Ok(())
}

/// Adds a completed Response's output (and tool results) to the history.
pub(crate) fn absorb(c: &mut Conversation, response: &Value) {
    for item in response["output"].as_array().into_iter().flatten() {
        c.input.push(item.clone());
        if item["type"] == "function_call" {
            c.input.push(serde_json::json!({"type": "function_call_output", "call_id": item["call_id"], "output": "done"}));
        }
    }
}

/// A turn that must answer 200 over `route`.
pub(crate) async fn ok_turn(c: &mut Conversation, sent: &mut Sent, route: &str) -> Check {
    let input = c.input.clone();
    let reply = send(c, sent).await?;
    let response = check_answer(&reply, c.stream, route)?;
    sent.ok.push((response["id"].as_str().unwrap_or_default().to_string(), input));
    absorb(c, &response);
    Ok(())
}

/// Sends the next turn and hangs up: after the first event (stream), or once
/// the upstream has the request (JSON). Then waits, within the deadline, for
/// the upstream response to have been drained to its end.
pub(crate) async fn hang_up(c: &Conversation, sent: &mut Sent, emu: &EmulatorHandle) -> Check {
    sent.inputs.push(c.input.clone());
    let before = emu.stats();
    let req = http::Request::post(format!("{}/responses", c.base))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", c.key))
        .body(Full::new(Bytes::from(c.body().to_string())))
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + DEADLINE;
    let client = common::client();
    if c.stream {
        let resp = tokio::time::timeout(DEADLINE, client.request(req))
            .await
            .map_err(|_| "no answer within the deadline")?
            .map_err(|e| format!("request failed: {e}"))?;
        ensure!(resp.status() == 200, "status {}", resp.status());
        let mut body = resp.into_body();
        let first = tokio::time::timeout(DEADLINE, body.frame()).await.map_err(|_| "no first event")?;
        ensure!(
            first
                .is_some_and(|f| f
                    .is_ok_and(|f| f.data_ref().is_some_and(|d| d.starts_with(b"event: response.created")))),
            "the stream did not start with response.created"
        );
    } else {
        // Dropped at the end of this block: the client hangs up.
        let pending = client.request(req);
        tokio::pin!(pending);
        while emu.stats().requests_ws == before.requests_ws {
            ensure!(Instant::now() < until, "the request never reached the upstream");
            tokio::select! {
                _ = &mut pending => return Err("answered before the hang-up".into()),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    drop(client);
    while emu.stats().completed == before.completed {
        ensure!(Instant::now() < until, "the upstream response was not drained within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Every response the emulator created saw a context the client sent.
pub(crate) fn check_oracle(emu: &EmulatorHandle, sent: &Sent) -> Check {
    let ok =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| common::assert_oracle_clean(emu, &sent.ok)));
    ensure!(ok.is_ok(), "oracle mismatch on a successful turn (see the panic above)");
    for record in emu.contexts() {
        let matched = sent
            .inputs
            .iter()
            .any(|input| tether::emulator::oracle::same_context(input, &record.context).is_ok());
        ensure!(matched, "response {} was created from a context the client never sent", record.response_id);
    }
    Ok(())
}

//! `POST /v1/responses` over plain HTTP: a JSON Response, or with
//! `stream:true` the SSE event stream (`event: <type>\ndata: <json>\n\n`,
//! no `[DONE]`). Only `store:true` responses can be continued here.

use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response, header};
use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::cost::pause;
use super::error::ApiError;
use super::events;
use super::server::{Body, error_response, full, json_response};
use super::state::{Shared, Transport};
use super::steps::Action;
use super::turn::{self, Turn};

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;

/// Handles `POST /v1/responses`.
pub(crate) async fn create(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return fail(&shared, &ApiError::invalid("Request body too large or unreadable.", None, None));
        }
    };
    shared.with_stats(|s| {
        s.requests_http += 1;
        s.bytes_received += bytes.len() as u64;
        s.bytes_received_http += bytes.len() as u64;
    });
    let body: Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => map,
        _ => {
            let e = ApiError::invalid("We could not parse the JSON body of your request.", None, None);
            return fail(&shared, &e);
        }
    };
    let faults = match turn::gather_faults(&shared, Transport::Http, &body) {
        Ok(f) => f,
        Err(e) => return fail(&shared, &e),
    };
    if faults.rate_limit {
        return fail(&shared, &ApiError::rate_limited());
    }
    let turn = match turn::prepare(&shared, Transport::Http, &body, bytes.len(), None, faults) {
        Ok(t) => t,
        Err(e) => return fail(&shared, &e),
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        reply_sse(shared, turn)
    } else {
        reply_json(&shared, turn).await
    }
}

/// The whole Response as JSON, after the turn's total delay.
async fn reply_json(shared: &Shared, turn: Turn) -> Response<Body> {
    let steps = turn.steps(&shared.config.cost);
    pause(steps.iter().map(|s| s.delay).sum::<Duration>()).await;
    for step in steps {
        match step.action {
            Action::Event(_) => {}
            Action::Error(e) => return fail(shared, &e),
            Action::Failed(_) => return fail(shared, &ApiError::with_status(500, "server_error")),
            Action::Malformed => return json_like(200, "{\"id\": \"resp_"),
            Action::Drop | Action::Close(_) => return aborted(shared),
        }
    }
    let held = turn.complete(shared);
    json_response(200, &held.response)
}

/// The event stream, played by a task as the steps come due.
fn reply_sse(shared: Arc<Shared>, turn: Turn) -> Response<Body> {
    let steps = turn.steps(&shared.config.cost);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut completed = false;
        let mut sent = 0u64;
        for step in steps {
            pause(step.delay).await;
            let frame = match step.action {
                Action::Event(n) => {
                    completed |= turn.completes(n);
                    sent += 1;
                    Ok(sse(turn.events[n].json["type"].as_str(), &turn.event_text(n)))
                }
                Action::Malformed => {
                    Ok(Bytes::from_static(b"event: response.output_text.delta\ndata: {\"type\": \n\n"))
                }
                Action::Failed(event) => {
                    let _ = tx.send(Ok(Frame::data(sse_value(&event)))).await;
                    break;
                }
                Action::Error(e) => {
                    let mut event = e.sse_event();
                    event["sequence_number"] = Value::from(sent);
                    let _ = tx.send(Ok(Frame::data(sse_value(&event)))).await;
                    break;
                }
                Action::Drop | Action::Close(_) => Err(std::io::Error::other("emulated drop")),
            };
            let stop = frame.is_err();
            if tx.send(frame.map(Frame::data)).await.is_err() || stop {
                break;
            }
        }
        if completed {
            turn.complete(&shared);
        } else {
            shared.with_stats(|s| s.errors += 1);
        }
    });
    let body =
        StreamBody::new(stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
    let mut response = Response::new(body.boxed());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

/// An SSE event of type `kind` (`message` when it has none) whose data is `text`.
fn sse(kind: Option<&str>, text: &str) -> Bytes {
    Bytes::from(format!("event: {}\ndata: {text}\n\n", kind.unwrap_or("message")))
}

fn sse_value(event: &Value) -> Bytes {
    sse(event.get("type").and_then(Value::as_str), &events::wire_text(event))
}

fn fail(shared: &Shared, error: &ApiError) -> Response<Body> {
    shared.with_stats(|s| s.errors += 1);
    error_response(error)
}

fn aborted(shared: &Shared) -> Response<Body> {
    shared.with_stats(|s| s.errors += 1);
    let body = StreamBody::new(stream::once(async { Err(std::io::Error::other("emulated drop")) }));
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn json_like(status: u16, text: &'static str) -> Response<Body> {
    let mut response = json_response(status, &Value::Null);
    *response.body_mut() = full(text);
    response
}

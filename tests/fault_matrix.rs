//! The end-to-end fault matrix (issue #10): every fault the emulator can
//! inject, and a client hanging up, × `stream` true and false × first turn
//! and continuation.
//!
//! Each cell runs its own emulator and tether. For the first-turn position
//! the fault is queued before turn 1; for the continuation position one clean
//! turn runs first and the fault is queued before turn 2. Every cell checks:
//! - the faulted call ends within [`DEADLINE`] with the outcome the recovery
//!   table (docs/ARCHITECTURE.md §2, `src/proxy/turn.rs`) designs for that
//!   fault: a correct answer, or a clean error in the API's shape;
//! - the recoveries tether counted are exactly the designed ones, the
//!   emulator consumed the fault, and the number of upstream connections
//!   shows whether the socket was kept or replaced;
//! - the conversation's next turns work (fresh or continue as designed, then
//!   continue), and the oracle finds no context that differs from what the
//!   client sent, for every response the emulator created;
//! - once the client is done, tether's gauges show no leak: nothing in
//!   flight, no client connection but the scrape's own, one upstream socket
//!   and one session for the one live conversation, and the runtime's tasks
//!   back to the baseline taken before the cell plus that socket's task;
//! - after a graceful shutdown, not one task of tether is left.
//!
//! tether and the test's client run on a runtime of their own per cell, the
//! emulators on a shared one, so `tether_runtime_tasks_alive` counts tether's
//! tasks (and the scrape's) and nothing of the emulator's.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Conversation;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tether::emulator::{EmulatorConfig, EmulatorHandle};

/// Every client call of a cell must end within this.
const DEADLINE: Duration = Duration::from_secs(10);
/// Gauges must reach their resting values within this once the client is done.
const SETTLE: Duration = Duration::from_secs(2);
/// `upstream.fallback_cooldown` in every cell (only refusals start one).
const COOLDOWN: Duration = Duration::from_secs(1);
/// `slow=MS` for the slow-upstream cells.
const SLOW_MS: u64 = 25;
/// Cells run at once (each on its own thread and runtime).
const PARALLEL: usize = 6;

/// Where in the conversation the fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Turn 1: nothing to continue yet.
    First,
    /// Turn 2: planned as a continuation of turn 1.
    Continuation,
}

/// One kind of fault, as the emulator provokes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    DropBeforeFirst,
    DropAfterFirst,
    CloseBeforeFirst,
    Error400,
    Error429,
    Error500,
    Error500AfterFirst,
    FailedMidResponse,
    Evict,
    AgeLimit,
    Refuse426,
    Refuse404,
    Refuse401,
    Malformed,
    MalformedAfterFirst,
    PingTimeout,
    Slow,
    ClientHangUp,
}

const KINDS: [Kind; 18] = [
    Kind::DropBeforeFirst,
    Kind::DropAfterFirst,
    Kind::CloseBeforeFirst,
    Kind::Error400,
    Kind::Error429,
    Kind::Error500,
    Kind::Error500AfterFirst,
    Kind::FailedMidResponse,
    Kind::Evict,
    Kind::AgeLimit,
    Kind::Refuse426,
    Kind::Refuse404,
    Kind::Refuse401,
    Kind::Malformed,
    Kind::MalformedAfterFirst,
    Kind::PingTimeout,
    Kind::Slow,
    Kind::ClientHangUp,
];

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
struct Cell {
    fault: Kind,
    stream: bool,
    position: Position,
}

/// What the client must get for the faulted turn.
#[derive(Debug)]
enum Outcome {
    /// 200 and the completed Response (JSON, or SSE ending in `response.completed`).
    Answer { route: &'static str },
    /// 200 SSE: events of the response, then the flat `error` event; never
    /// `response.completed` (two responses are never spliced into one).
    SseError { route: &'static str, code: &'static str },
    /// 200 SSE ending in the upstream's own `response.failed`, passed through.
    SseFailed { route: &'static str },
    /// That status with `{"error":{…}}`, as JSON even for `stream:true`.
    Error { status: u16, kind: &'static str, code: &'static str, route: Option<&'static str> },
    /// The client hangs up (after the first event, or before any answer for
    /// JSON); the upstream response is drained to its end.
    HungUp,
}

/// A step after the faulted turn.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// A turn that must answer 200 over this route.
    Turn(&'static str),
    /// Let the HTTP fallback's cool-down pass.
    Cooldown,
}

/// The designed behaviour of one cell.
#[derive(Debug)]
struct Expect {
    outcome: Outcome,
    /// The recoveries tether must count (and no others).
    recoveries: &'static [&'static str],
    /// Whether the conversation's socket was replaced (emulator connections: 2, else 1).
    new_socket: bool,
    then: &'static [Then],
}

impl Expect {
    /// Tasks tether keeps beyond its baseline and the live socket's task:
    /// after turns over plain HTTP, the HTTP client's one idle keep-alive
    /// connection to the upstream and its pool's reaper (both end after 90 s
    /// idle; `src/upstream/http.rs`).
    fn http_pool_tasks(&self) -> i64 {
        match self.outcome {
            Outcome::Answer { route: "http_fallback" } => 2,
            _ => 0,
        }
    }
}

const CONTINUE: &[Then] = &[Then::Turn("continue"), Then::Turn("continue")];
const RETRY: &[Then] = &[Then::Turn("fresh"), Then::Turn("continue")];
const AFTER_COOLDOWN: &[Then] =
    &[Then::Turn("http_fallback"), Then::Cooldown, Then::Turn("fresh"), Then::Turn("continue")];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::DropBeforeFirst => "drop_before_first_event",
            Kind::DropAfterFirst => "drop_after_first_event",
            Kind::CloseBeforeFirst => "close_1011_before_first_event",
            Kind::Error400 => "error_frame_400",
            Kind::Error429 => "error_frame_429",
            Kind::Error500 => "error_frame_500",
            Kind::Error500AfterFirst => "error_frame_500_after_first_event",
            Kind::FailedMidResponse => "response_failed_mid_response",
            Kind::Evict => "eviction",
            Kind::AgeLimit => "age_limit",
            Kind::Refuse426 => "upgrade_refused_426",
            Kind::Refuse404 => "upgrade_refused_404",
            Kind::Refuse401 => "upgrade_refused_401",
            Kind::Malformed => "malformed_frame_before_first_event",
            Kind::MalformedAfterFirst => "malformed_frame_after_first_event",
            Kind::PingTimeout => "ping_timeout",
            Kind::Slow => "slow_upstream",
            Kind::ClientHangUp => "client_hang_up",
        }
    }

    /// The faults queued before the faulted turn. A refused upgrade needs an
    /// upgrade: at a continuation the conversation's socket is dropped first,
    /// so the turn reconnects and meets the refusal.
    fn faults(self, position: Position) -> Vec<String> {
        let refuse = |status: u16| match position {
            Position::First => vec![format!("ws:refuse_upgrade={status}")],
            Position::Continuation => {
                vec!["ws:drop_after=0".to_string(), format!("ws:refuse_upgrade={status}")]
            }
        };
        let one = |s: &str| vec![s.to_string()];
        match self {
            Kind::DropBeforeFirst => one("ws:drop_after=0"),
            Kind::DropAfterFirst => one("ws:drop_after=3"),
            Kind::CloseBeforeFirst => one("ws:close=1011@0"),
            Kind::Error400 => one("ws:error_at=0:400:invalid_prompt"),
            Kind::Error429 => one("ws:rate_limit"),
            Kind::Error500 => one("ws:error_at=0:500:server_error"),
            Kind::Error500AfterFirst => one("ws:error_at=3:500:server_error"),
            Kind::FailedMidResponse => one("ws:failed_at=3"),
            Kind::Evict => one("ws:evict"),
            // What the service sends at its connection age limit (PROTOCOL.md §2).
            Kind::AgeLimit => one("ws:error_at=0:400:websocket_connection_limit_reached"),
            Kind::Refuse426 => refuse(426),
            Kind::Refuse404 => refuse(404),
            Kind::Refuse401 => refuse(401),
            Kind::Malformed => one("ws:malformed_at=0"),
            Kind::MalformedAfterFirst => one("ws:malformed_at=3"),
            Kind::PingTimeout => one("ws:no_pong"),
            Kind::Slow | Kind::ClientHangUp => vec![format!("ws:slow={SLOW_MS}")],
        }
    }
}

impl Cell {
    fn name(&self) -> String {
        let stream = if self.stream { "stream" } else { "json" };
        let position = match self.position {
            Position::First => "first",
            Position::Continuation => "continuation",
        };
        format!("{}/{stream}/{position}", self.fault.label())
    }

    /// The route a turn that is not recovered takes at this position.
    fn planned(&self) -> &'static str {
        match self.position {
            Position::First => "fresh",
            Position::Continuation => "continue",
        }
    }

    /// The designed outcome (docs/ARCHITECTURE.md §2 and `src/proxy/turn.rs`).
    fn expect(&self) -> Expect {
        let cont = self.position == Position::Continuation;
        let planned = self.planned();
        let answer = |recoveries, new_socket| Expect {
            outcome: Outcome::Answer { route: "fresh" },
            recoveries,
            new_socket,
            then: CONTINUE,
        };
        let error = |status, kind, code| Expect {
            outcome: Outcome::Error { status, kind, code, route: Some(planned) },
            recoveries: &[],
            new_socket: false,
            then: RETRY,
        };
        match self.fault {
            // Socket lost before any byte went downstream: new socket, fresh, once.
            Kind::DropBeforeFirst | Kind::CloseBeforeFirst => answer(&["socket_lost->fresh"], true),
            Kind::PingTimeout => answer(&["socket_lost->fresh"], true),
            // JSON clients have received nothing: the retry is still invisible.
            Kind::DropAfterFirst if !self.stream => answer(&["socket_lost->fresh"], true),
            // After bytes went out: an SSE `error` event; the session is evicted.
            Kind::DropAfterFirst => Expect {
                outcome: Outcome::SseError { route: planned, code: "upstream_error" },
                recoveries: &[],
                new_socket: true,
                then: RETRY,
            },
            Kind::Error400 => error(400, "invalid_request_error", "invalid_prompt"),
            Kind::Error429 => error(429, "rate_limit_error", "rate_limit_exceeded"),
            Kind::Error500 => error(500, "server_error", "server_error"),
            // After bytes went out, the error frame becomes the flat SSE `error` event.
            Kind::Error500AfterFirst if self.stream => Expect {
                outcome: Outcome::SseError { route: planned, code: "server_error" },
                recoveries: &[],
                new_socket: false,
                then: RETRY,
            },
            Kind::Error500AfterFirst => error(500, "server_error", "server_error"),
            Kind::FailedMidResponse if self.stream => Expect {
                outcome: Outcome::SseFailed { route: planned },
                recoveries: &[],
                new_socket: false,
                then: RETRY,
            },
            Kind::FailedMidResponse => error(500, "server_error", "server_error"),
            // `previous_response_not_found`: fresh on the same socket, once.
            Kind::Evict if cont => answer(&["previous_response_not_found->fresh"], false),
            // Nothing to evict yet: the turn is not even disturbed.
            Kind::Evict => answer(&[], false),
            Kind::AgeLimit => answer(&["connection_limit->fresh"], true),
            // A socket that sent garbage is not used again.
            Kind::Malformed => answer(&["malformed_frame->fresh"], true),
            Kind::MalformedAfterFirst if !self.stream => answer(&["malformed_frame->fresh"], true),
            Kind::MalformedAfterFirst => Expect {
                outcome: Outcome::SseError { route: planned, code: "upstream_error" },
                recoveries: &[],
                new_socket: true,
                then: RETRY,
            },
            Kind::Slow => Expect {
                outcome: Outcome::Answer { route: planned },
                recoveries: &[],
                new_socket: false,
                then: CONTINUE,
            },
            // The drained socket serves the client's retry, sent whole: the
            // response it holds never reached the client.
            Kind::ClientHangUp => {
                Expect { outcome: Outcome::HungUp, recoveries: &[], new_socket: false, then: RETRY }
            }
            // HTTP for the cool-down, then WebSocket mode again.
            Kind::Refuse426 | Kind::Refuse404 => Expect {
                outcome: Outcome::Answer { route: "http_fallback" },
                recoveries: if cont { &["socket_lost->fresh"] } else { &[] },
                new_socket: cont,
                then: AFTER_COOLDOWN,
            },
            // The upgrade's own status and body reach the client.
            Kind::Refuse401 => Expect {
                outcome: Outcome::Error {
                    status: 401,
                    kind: "authentication_error",
                    code: "upgrade_refused",
                    route: None,
                },
                recoveries: if cont { &["socket_lost->fresh"] } else { &[] },
                new_socket: cont,
                then: RETRY,
            },
        }
    }
}

/// One HTTP exchange, as the client saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    route: Option<String>,
    content_type: String,
    body: Bytes,
    took: Duration,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a cell sent: inputs of every request, and (id, input) of every success.
#[derive(Default)]
struct Sent {
    inputs: Vec<Vec<Value>>,
    ok: Vec<(String, Vec<Value>)>,
}

type Check<T = ()> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Sends the conversation's next request within [`DEADLINE`].
async fn send(c: &Conversation, sent: &mut Sent) -> Check<Reply> {
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
fn sse_events(reply: &Reply) -> Check<Vec<(String, Value)>> {
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
fn check_prefix(events: &[(String, Value)]) -> Check {
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
fn check_answer(reply: &Reply, stream: bool, route: &str) -> Check<Value> {
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
fn check_error(reply: &Reply, status: u16, kind: &str, code: &str, route: Option<&str>) -> Check {
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
fn check_sse_error(reply: &Reply, route: &str, code: &str) -> Check {
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
fn check_sse_failed(reply: &Reply, route: &str) -> Check {
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
fn absorb(c: &mut Conversation, response: &Value) {
    for item in response["output"].as_array().into_iter().flatten() {
        c.input.push(item.clone());
        if item["type"] == "function_call" {
            c.input.push(serde_json::json!({"type": "function_call_output", "call_id": item["call_id"], "output": "done"}));
        }
    }
}

/// A turn that must answer 200 over `route`.
async fn ok_turn(c: &mut Conversation, sent: &mut Sent, route: &str) -> Check {
    let input = c.input.clone();
    let reply = send(c, sent).await?;
    let response = check_answer(&reply, c.stream, route)?;
    sent.ok.push((response["id"].as_str().unwrap_or_default().to_string(), input));
    absorb(c, &response);
    Ok(())
}

/// tether's `/metrics`, parsed: unlabelled samples and recovery counters.
#[derive(Debug, Default, Clone, PartialEq)]
struct Scrape {
    in_flight: Option<i64>,
    client_connections: Option<i64>,
    tasks: Option<i64>,
    sockets: Option<i64>,
    sockets_busy: Option<i64>,
    sessions: Option<i64>,
    recoveries: BTreeSet<String>,
}

async fn scrape(url: &str) -> Check<Scrape> {
    let (status, body) = tokio::time::timeout(DEADLINE, common::get(url)).await.map_err(|_| "scrape hung")?;
    ensure!(status == 200, "/metrics answered {status}");
    let mut s = Scrape::default();
    for line in String::from_utf8_lossy(&body).lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let v = v as i64;
        match name {
            "tether_requests_in_flight" => s.in_flight = Some(v),
            "tether_client_connections_open" => s.client_connections = Some(v),
            "tether_runtime_tasks_alive" => s.tasks = Some(v),
            "tether_upstream_sockets_open" => s.sockets = Some(v),
            "tether_upstream_sockets_busy" => s.sockets_busy = Some(v),
            "tether_sessions_live" => s.sessions = Some(v),
            _ => {
                if let Some(kind) = name
                    .strip_prefix("tether_recoveries_total{kind=\"")
                    .and_then(|k| k.strip_suffix("\"}"))
                    .filter(|_| v > 0)
                {
                    s.recoveries.insert(kind.to_string());
                }
            }
        }
    }
    Ok(s)
}

/// The resting state tether must reach once no client is active.
#[derive(Debug)]
struct Rest {
    sockets: i64,
    sessions: i64,
    /// `None` while the baseline is being taken.
    tasks: Option<i64>,
}

/// Polls `/metrics` until the gauges rest at `want` (the scrape's own
/// connection and request are the only client activity), or fails after
/// [`SETTLE`] with the last values.
async fn settle(url: &str, want: &Rest) -> Check<Scrape> {
    let until = Instant::now() + SETTLE;
    loop {
        let s = scrape(url).await?;
        let ok = s.in_flight == Some(1)
            && s.client_connections == Some(1)
            && s.sockets == Some(want.sockets)
            && s.sockets_busy == Some(0)
            && s.sessions == Some(want.sessions)
            && s.tasks.is_some()
            && want.tasks.is_none_or(|t| s.tasks == Some(t));
        if ok {
            return Ok(s);
        }
        if Instant::now() >= until {
            return Err(format!(
                "gauges did not rest within {SETTLE:?}: in flight {:?} (want 1: the scrape), client connections \
                 {:?} (want 1: the scrape's), upstream sockets {:?} (want {}), busy {:?} (want 0), sessions {:?} (want {}), \
                 runtime tasks {:?} (want {:?})",
                s.in_flight,
                s.client_connections,
                s.sockets,
                want.sockets,
                s.sockets_busy,
                s.sessions,
                want.sessions,
                s.tasks,
                want.tasks
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every response the emulator created saw a context the client sent.
fn check_oracle(emu: &EmulatorHandle, sent: &Sent) -> Check {
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

/// What one cell found, for the summary.
#[derive(Debug, Default)]
struct Report {
    turns: usize,
    faulted_took: Duration,
    baseline_tasks: i64,
    tasks_after_shutdown: usize,
}

async fn run_cell(cell: Cell, emulators: tokio::runtime::Handle) -> Check<Report> {
    let expect = cell.expect();
    let (addr, emu) = emulators
        .spawn(tether::emulator::spawn(EmulatorConfig::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let result = drive(cell, &expect, addr, &emu).await;
    emu.shutdown();
    result
}

async fn drive(
    cell: Cell,
    expect: &Expect,
    addr: std::net::SocketAddr,
    emu: &EmulatorHandle,
) -> Check<Report> {
    let mut config = common::config_for(&format!("http://{addr}/v1"));
    config.upstream.fallback_cooldown = COOLDOWN;
    if cell.fault == Kind::PingTimeout {
        config.pool.ping_interval = Duration::from_millis(100);
        config.pool.pong_timeout = Duration::from_millis(1000);
    }
    let mut t = common::start(config).await;
    let metrics = format!("http://{}/metrics", t.addr);
    let mut report = Report::default();

    // Baseline: tether idle, its only client the scrape itself.
    scrape(&metrics).await?;
    let baseline = settle(&metrics, &Rest { sockets: 0, sessions: 0, tasks: None }).await?;
    report.baseline_tasks = baseline.tasks.unwrap_or_default();

    let mut c = Conversation::new(&t.base(), "sk-fault", cell.stream);
    let mut sent = Sent::default();
    if cell.position == Position::Continuation {
        ok_turn(&mut c, &mut sent, "fresh").await.map_err(|e| format!("clean turn 1: {e}"))?;
    }
    let faults = cell.fault.faults(cell.position);
    for f in &faults {
        emu.inject(f.parse().map_err(|e| format!("{f}: {e}"))?);
    }

    // The faulted turn.
    if let Outcome::HungUp = expect.outcome {
        hang_up(&c, &mut sent, emu).await.map_err(|e| format!("faulted turn: {e}"))?;
    } else {
        faulted_turn(cell, expect, &mut c, &mut sent, &mut report)
            .await
            .map_err(|e| format!("faulted turn: {e}"))?;
    }
    let s = scrape(&metrics).await?;

    let want: BTreeSet<String> = expect.recoveries.iter().map(|r| r.to_string()).collect();
    ensure!(s.recoveries == want, "recoveries {:?}, want {want:?}", s.recoveries);

    // The conversation goes on.
    for (n, step) in expect.then.iter().enumerate() {
        match step {
            Then::Turn(route) => ok_turn(&mut c, &mut sent, route)
                .await
                .map_err(|e| format!("turn {} after the fault: {e}", n + 1))?,
            Then::Cooldown => tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await,
        }
    }
    report.turns = sent.inputs.len();

    check_oracle(emu, &sent)?;
    let stats = emu.stats();
    ensure!(
        stats.faults_applied == faults.len() as u64,
        "the emulator applied {} of {} faults",
        stats.faults_applied,
        faults.len()
    );
    let sockets_used = if expect.new_socket { 2 } else { 1 };
    ensure!(
        stats.ws_connections == sockets_used,
        "{} upstream connections, want {sockets_used}",
        stats.ws_connections
    );

    // No leaks: one conversation is live, on one socket (one task).
    let tasks = report.baseline_tasks + 1 + expect.http_pool_tasks();
    let want = Rest { sockets: 1, sessions: 1, tasks: Some(tasks) };
    settle(&metrics, &want).await.map_err(|e| format!("after the cell: {e}"))?;

    // Graceful shutdown leaves no task of tether behind.
    t.stop();
    tokio::time::timeout(DEADLINE, &mut t.done)
        .await
        .map_err(|_| "tether did not shut down within the deadline".to_string())?
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Handle::current();
    let until = Instant::now() + SETTLE;
    while rt.metrics().num_alive_tasks() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.tasks_after_shutdown = rt.metrics().num_alive_tasks();
    ensure!(report.tasks_after_shutdown == 0, "{} tasks alive after shutdown", report.tasks_after_shutdown);
    Ok(report)
}

/// Sends the faulted turn and checks the client's answer against the design.
async fn faulted_turn(
    cell: Cell,
    expect: &Expect,
    c: &mut Conversation,
    sent: &mut Sent,
    report: &mut Report,
) -> Check {
    let input = c.input.clone();
    let reply = send(c, sent).await?;
    report.faulted_took = reply.took;
    match expect.outcome {
        Outcome::Answer { route } => {
            let response = check_answer(&reply, cell.stream, route)?;
            sent.ok.push((response["id"].as_str().unwrap_or_default().to_string(), input));
            absorb(c, &response);
        }
        Outcome::SseError { route, code } => check_sse_error(&reply, route, code)?,
        Outcome::SseFailed { route } => check_sse_failed(&reply, route)?,
        Outcome::Error { status, kind, code, route } => check_error(&reply, status, kind, code, route)?,
        Outcome::HungUp => return Err("not a turn the client waits for".into()),
    }
    if cell.fault == Kind::Slow {
        // Every response has at least five events, each delayed.
        let least = Duration::from_millis(5 * SLOW_MS);
        ensure!(reply.took >= least, "slow upstream answered in {:?}, under {least:?}", reply.took);
    }
    Ok(())
}

/// Sends the next turn and hangs up: after the first event (stream), or once
/// the upstream has the request (JSON). Then waits, within the deadline, for
/// the upstream response to have been drained to its end.
async fn hang_up(c: &Conversation, sent: &mut Sent, emu: &EmulatorHandle) -> Check {
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

fn cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for fault in KINDS {
        for stream in [false, true] {
            for position in [Position::First, Position::Continuation] {
                cells.push(Cell { fault, stream, position });
            }
        }
    }
    cells
}

#[test]
fn fault_matrix() {
    let started = Instant::now();
    let emulators = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("emulators")
        .enable_all()
        .build()
        .expect("emulator runtime");
    let queue = Arc::new(Mutex::new(cells().into_iter().collect::<VecDeque<_>>()));
    let total = queue.lock().expect("queue").len();
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (queue, results, handle) = (queue.clone(), results.clone(), emulators.handle().clone());
            std::thread::spawn(move || {
                loop {
                    // Not in the `while let` scrutinee: its guard would live through the cell.
                    let next = queue.lock().expect("queue").pop_front();
                    let Some(cell) = next else { break };
                    let handle = handle.clone();
                    // A thread named after the cell, so a panic names it too.
                    let outcome = std::thread::Builder::new()
                        .name(cell.name())
                        .spawn(move || {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("cell runtime");
                            rt.block_on(run_cell(cell, handle))
                        })
                        .expect("spawn cell")
                        .join()
                        .unwrap_or_else(|_| Err("panicked".into()));
                    results.lock().expect("results").push((cell.name(), outcome));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let failures: Vec<String> =
        results.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| format!("  {name}: {e}"))).collect();
    let turns: usize = results.iter().filter_map(|(_, r)| r.as_ref().ok()).map(|r| r.turns).sum();
    let slowest =
        results.iter().filter_map(|(name, r)| r.as_ref().ok().map(|r| (r.faulted_took, name))).max();
    eprintln!(
        "fault matrix: {} cells, {} passed, {turns} client turns, slowest faulted turn {slowest:?}, {:?} in all",
        total,
        total - failures.len(),
        started.elapsed()
    );
    assert!(results.len() == total, "{} of {total} cells reported", results.len());
    assert!(failures.is_empty(), "{} of {total} cells failed:\n{}", failures.len(), failures.join("\n"));
}

//! The managed path end to end: the reference agent loop through tether to
//! the in-process emulator. Every context the emulator reconstructs is
//! checked against what the client sent (the oracle, with the emulator's own
//! comparison code).

mod common;

use tether::agent::{self, LoopReport, LoopSpec};
use tether::emulator::{self, EmulatorConfig, EmulatorHandle};

async fn emulator() -> (String, EmulatorHandle) {
    let (addr, handle) = emulator::spawn(EmulatorConfig::default()).await.expect("emulator");
    (format!("http://{addr}/v1"), handle)
}

fn mismatches(emu: &EmulatorHandle, report: &LoopReport) -> usize {
    tether::demo::oracle_mismatches(emu, report)
}

fn routes(report: &LoopReport) -> Vec<&str> {
    report.turns.iter().map(|t| t.route.as_deref().unwrap_or("none")).collect()
}

#[tokio::test]
async fn thirty_turn_loop_continues_from_turn_two_with_zero_mismatches() {
    let (upstream, emu) = emulator().await;
    let spec = LoopSpec { tool_calls: 29, ..LoopSpec::default() };
    let direct = agent::run(&upstream, &spec).await.expect("direct loop");
    let direct_bytes = emu.stats().bytes_received;
    assert_eq!(mismatches(&emu, &direct), 0);
    emu.reset();

    let t = common::start(common::config_for(&upstream)).await;
    let through = agent::run(&t.base(), &spec).await.expect("loop through tether");
    assert_eq!(through.turns.len(), 30);
    let r = routes(&through);
    assert_eq!(r[0], "fresh");
    assert!(r[1..].iter().all(|r| *r == "continue"), "{r:?}");
    assert_eq!(mismatches(&emu, &through), 0, "a context differed from what the client sent");
    assert_eq!(through.final_text, direct.final_text, "same answer as direct");
    let stats = emu.stats();
    assert_eq!(stats.continuations, 29);
    let ratio = stats.bytes_received as f64 / direct_bytes as f64;
    assert!(ratio <= 0.15, "upstream bytes {} vs direct {} = {ratio:.3}", stats.bytes_received, direct_bytes);
    // From turn 2 on, the emulator served the parent context from its cache.
    for turn in &through.turns[1..] {
        assert!(turn.cached_tokens > 0 && turn.cached_tokens <= turn.input_tokens, "{turn:?}");
    }
}

#[tokio::test]
async fn non_streaming_loop_continues_too() {
    let (upstream, emu) = emulator().await;
    let t = common::start(common::config_for(&upstream)).await;
    let spec = LoopSpec { tool_calls: 5, stream: false, ..LoopSpec::default() };
    let report = agent::run(&t.base(), &spec).await.expect("loop");
    let r = routes(&report);
    assert_eq!(r, ["fresh", "continue", "continue", "continue", "continue", "continue"]);
    assert_eq!(mismatches(&emu, &report), 0);
}

#[tokio::test]
async fn eight_parallel_loops_each_pinned_to_its_own_socket() {
    let (upstream, emu) = emulator().await;
    let t = common::start(common::config_for(&upstream)).await;
    let base = t.base();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let spec = LoopSpec { tool_calls: 9, tag: format!("par-{i}"), ..LoopSpec::default() };
            agent::run(&base, &spec).await.expect("loop")
        }));
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("join"));
    }
    for report in &reports {
        assert_eq!(mismatches(&emu, report), 0);
        assert!(routes(report)[1..].iter().all(|r| *r == "continue"), "{:?}", routes(report));
    }
    let stats = emu.stats();
    assert_eq!(stats.continuations, 8 * 9);
    assert_eq!(stats.ws_connections, 8, "one socket per conversation");
}

#[tokio::test]
async fn two_keys_never_share_a_socket_or_a_chain() {
    let (upstream, emu) = emulator().await;
    let t = common::start(common::config_for(&upstream)).await;
    // The same conversation under two keys, one after the other.
    let a = LoopSpec {
        tool_calls: 3,
        tag: "shared".into(),
        api_key: "sk-tenant-a".into(),
        ..LoopSpec::default()
    };
    let b = LoopSpec { api_key: "sk-tenant-b".into(), ..a.clone() };
    let ra = agent::run(&t.base(), &a).await.expect("a");
    let rb = agent::run(&t.base(), &b).await.expect("b");
    assert_eq!(routes(&rb)[0], "fresh", "tenant b must not continue tenant a's identical conversation");
    assert_eq!(mismatches(&emu, &ra) + mismatches(&emu, &rb), 0);
    assert_eq!(emu.stats().ws_connections, 2, "each tenant has its own socket");
}

#[tokio::test]
async fn edited_history_goes_fresh_then_continues_again() {
    let (upstream, emu) = emulator().await;
    let t = common::start(common::config_for(&upstream)).await;
    let spec = LoopSpec { tool_calls: 6, tag: "edit".into(), ..LoopSpec::default() };
    let first = agent::run(&t.base(), &LoopSpec { tool_calls: 3, ..spec.clone() }).await.expect("loop");
    assert_eq!(mismatches(&emu, &first), 0);
    // Replay the conversation with an old tool output dropped (client-side compaction).
    let last = first.turns.last().expect("turns");
    let mut edited = last.input.clone();
    let drop_at = edited.iter().position(|i| i["type"] == "function_call_output").expect("a tool output");
    edited[drop_at]["output"] = serde_json::json!("[compacted]");
    let body = serde_json::json!({"model": spec.model, "input": edited, "store": false, "stream": false,
                                  "include": ["reasoning.encrypted_content"],
                                  "metadata": {"emulator_script": "tools=6,reasoning=1"}});
    let (status, bytes, route) = post(&t.base(), &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(route.as_deref(), Some("fresh"));
    let resp: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    // The next turn builds on the edited history and continues.
    let mut next = edited.clone();
    for item in resp["output"].as_array().expect("output") {
        next.push(item.clone());
        if item["type"] == "function_call" {
            next.push(serde_json::json!({"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}));
        }
    }
    let body2 = serde_json::json!({"model": spec.model, "input": next, "store": false, "stream": false,
                                   "include": ["reasoning.encrypted_content"],
                                   "metadata": {"emulator_script": "tools=6,reasoning=1"}});
    let (status, bytes, route) = post(&t.base(), &body2).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(route.as_deref(), Some("continue"));
    let id = serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")["id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let ctx = emu.contexts().into_iter().find(|c| c.response_id == id).expect("recorded");
    assert!(emulator::oracle::same_context(&next, &ctx.context).is_ok());
}

/// POSTs a body to tether's `/responses`; returns status, body and route.
async fn post(base: &str, body: &serde_json::Value) -> (u16, bytes::Bytes, Option<String>) {
    use http_body_util::{BodyExt, Full};
    let req = http::Request::post(format!("{base}/responses"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-tether-demo")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    let resp = common::client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    let route = resp.headers().get("x-tether-route").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, resp.into_body().collect().await.expect("body").to_bytes(), route)
}

#[tokio::test]
async fn string_input_and_client_managed_chaining_work() {
    let (upstream, emu) = emulator().await;
    let t = common::start(common::config_for(&upstream)).await;
    let (status, bytes, route) = post(
        &t.base(),
        &serde_json::json!({"model": "m", "input": "hello", "store": true,
                                 "metadata": {"emulator_script": "tools=0"}}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(route.as_deref(), Some("fresh"));
    let first: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    let id = first["id"].as_str().expect("id");
    let body = serde_json::json!({"model": "m", "input": [{"role": "user", "content": "and then?"}],
                                  "previous_response_id": id, "store": true,
                                  "metadata": {"emulator_script": "tools=0"}});
    let (status, bytes, route) = post(&t.base(), &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(route.as_deref(), Some("client_managed"));
    let second: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(second["previous_response_id"], id, "the client sees its own previous_response_id");
    assert_eq!(emu.stats().errors, 0);
}

/// Spares are on by default: after a tenant's first turn a spare socket is
/// opened in the background, and the tenant's next new conversation starts
/// on it instead of waiting for a handshake; the spare is then replaced.
#[tokio::test]
async fn a_new_conversation_starts_on_the_spare_socket() {
    let (emu, t) = common::emulator_and_tether(tether::emulator::EmulatorConfig::default(), |c| {
        c.pool.spares_per_tenant = tether::config::Config::default().pool.spares_per_tenant;
    })
    .await;
    let mut a = common::Conversation::new(&t.base(), "sk-spare", false);
    assert_eq!(a.turn().await.route.as_deref(), Some("fresh"));
    // Wait for tether's pool itself to hold the spare (the emulator counts an
    // upgrade before tether has read its answer).
    common::wait_metric(t.addr, "tether_upstream_sockets_open", std::time::Duration::from_secs(10), |v| {
        v == 2.0
    })
    .await;
    let mut b = common::Conversation::new(&t.base(), "sk-spare", false);
    b.input[1]["content"][0]["text"] = serde_json::json!("another task entirely");
    assert_eq!(b.turn().await.route.as_deref(), Some("fresh"));
    let (_, doc) = common::get(&format!("http://{}/debug/sessions", t.addr)).await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("json");
    let mut sockets: Vec<u64> = doc["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["socket"].as_u64().expect("id"))
        .collect();
    sockets.sort_unstable();
    // Socket 1 served A; the spare (2) was open before B arrived and served it.
    assert_eq!(sockets, [1, 2], "{doc}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while emu.stats().ws_connections < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the spare was not replaced");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A request sent again (a retry, a regenerate) is a fresh turn whose
/// response supersedes the first one's (the same conversation, the same
/// tip): the socket that held the superseded response holds nothing any
/// session continues from, and the next such turn reuses it instead of
/// opening yet another upstream connection.
#[tokio::test]
async fn resent_turns_reuse_the_sockets_they_superseded() {
    let (emu, t) = common::emulator_and_tether(tether::emulator::EmulatorConfig::default(), |_| {}).await;
    let mut c = common::Conversation::new(&t.base(), "sk-resend", false);
    c.script = "tools=0".into();
    for i in 0..5 {
        let reply = c.send().await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.route.as_deref(), Some("fresh"), "send {i}");
    }
    // The first send opened one socket, the second another (the first still
    // held a live session); from then on each send takes the socket the one
    // before it superseded.
    assert_eq!(emu.stats().ws_connections, 2);
    assert_eq!(common::metric(t.addr, "tether_upstream_sockets_open").await, 2.0);
    assert_eq!(emu.stats().errors, 0);
}

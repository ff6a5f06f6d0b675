//! Observability: one decision record per turn with its plan and reason, on
//! `/debug/events`, in `/metrics` and `/debug/sessions`; slow readers lose
//! records without slowing anything; keys and content never leak.

#![allow(clippy::unwrap_used)] // a panic is a failed test

mod common;

use std::time::Duration;

use common::Conversation;
use http_body_util::BodyExt;
use tether::emulator::EmulatorConfig;
use tether::metrics::Metrics;

/// Collects `/debug/events` records in the background.
struct EventTap {
    records: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl EventTap {
    async fn start(addr: std::net::SocketAddr) -> EventTap {
        let req = http::Request::get(format!("http://{addr}/debug/events"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let resp = common::client().request(req).await.expect("events");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        // The stream's first bytes arrive once the subscription exists.
        let _hello = body.frame().await.expect("hello").expect("data");
        let records = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = records.clone();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some(json) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                            sink.lock().unwrap().push(serde_json::from_str(json).expect("record json"));
                        }
                    }
                }
            }
        });
        EventTap { records }
    }

    async fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.records.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {} records", got.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn each_plan_and_reason_is_recorded_and_counted() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let tap = EventTap::start(t.addr).await;
    let mut c = Conversation::new(&t.base(), "sk-obs", false);
    c.turn().await; // fresh: first turn
    c.turn().await; // continue
    // Diverged: an old item edited.
    c.input[1]["content"][0]["text"] = serde_json::json!("a different task");
    c.turn().await;
    // Model changed on an otherwise continuing history.
    let mut body = c.body();
    body["model"] = serde_json::json!("another-model");
    post(&t.base(), &body).await;
    // Client-managed and HTTP fallback (background).
    let first = c.send().await.response();
    let chained = serde_json::json!({"model": "gpt-emulated", "previous_response_id": first["id"], "store": false,
        "input": [{"type": "function_call_output", "call_id": first["output"][0]["call_id"], "output": "x"}],
        "metadata": {"emulator_script": "tools=20"}});
    post(&t.base(), &chained).await;
    post(&t.base(), &serde_json::json!({"model": "m", "input": "hi", "background": true})).await;

    let records = tap.wait_for(7).await;
    let plans: Vec<(String, String)> = records
        .iter()
        .map(|r| (r["plan"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    let expect = |plan: &str, reason: &str| {
        assert!(plans.iter().any(|(p, r)| p == plan && r == reason), "no {plan}/{reason} in {plans:?}");
    };
    expect("fresh", "first_turn");
    expect("continue", "");
    expect("fresh", "diverged");
    expect("fresh", "model_changed");
    expect("client_managed", "");
    expect("http_fallback", "background");
    let diverged = records.iter().find(|r| r["reason"] == "diverged").unwrap();
    assert!(diverged["detail"].as_str().unwrap().contains("item 1"), "{diverged}");
    for r in &records {
        for field in
            ["tenant", "items_in", "items_up", "bytes_in", "bytes_up", "total_ms", "status", "outcome"]
        {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
    }
    let continued = records.iter().find(|r| r["plan"] == "continue").unwrap();
    assert!(continued["bytes_up"].as_u64() < continued["bytes_in"].as_u64());
    assert!(continued["ttfe_ms"].as_f64().is_some() && continued["prepare_ms"].as_f64().is_some());
    assert!(
        continued["socket"].as_u64().is_some() && continued["socket_age_ms"].as_u64().is_some(),
        "{continued}"
    );

    let (status, metrics) = common::get(&format!("http://{}/metrics", t.addr)).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        "tether_requests_total{plan=\"continue\",reason=\"\"} 2",
        "tether_requests_total{plan=\"fresh\",reason=\"first_turn\"} 1",
        "tether_requests_total{plan=\"fresh\",reason=\"diverged\"} 1",
        "tether_requests_total{plan=\"http_fallback\",reason=\"background\"} 1",
        "tether_requests_total{plan=\"fresh\",reason=\"model_changed\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in\n{metrics}");
    }
    assert!(metrics.contains("tether_bytes_saved_total"));
    assert!(metrics.contains("tether_prepare_seconds_bucket"));

    let (_, sessions) = common::get(&format!("http://{}/debug/sessions", t.addr)).await;
    let sessions: serde_json::Value = serde_json::from_slice(&sessions).unwrap();
    let list = sessions["sessions"].as_array().unwrap();
    assert!(list.iter().any(|s| s["continues"] == 1), "{sessions}");
    assert!(list.iter().all(|s| s["tenant"].as_str().unwrap().len() == 8));
}

/// POSTs under the same key as `Conversation::new(_, "sk-obs", _)`.
async fn post(base: &str, body: &serde_json::Value) -> u16 {
    let c = Conversation { input: Vec::new(), ..Conversation::new(base, "sk-obs", false) };
    let req = http::Request::post(format!("{}/responses", c.base))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-obs")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    common::client().request(req).await.expect("response").status().as_u16()
}

#[tokio::test]
async fn a_stalled_reader_loses_records_and_they_are_counted() {
    let events = tether::events::Events::with_capacity(4);
    let metrics = std::sync::Arc::new(Metrics::default());
    let resp = events.sse(metrics.clone(), None);
    tokio::task::yield_now().await;
    // The reader is subscribed but reads nothing; publishing never waits.
    let started = std::time::Instant::now();
    for i in 0..200 {
        events.publish(0, || format!("{{\"n\":{i}}}"));
    }
    assert_eq!(events.readers(), 1);
    let _ = started;
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains("\"n\":199") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("frame")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    assert!(text.contains(": dropped"), "{text}");
    let rendered = metrics.render(&Default::default(), 0);
    let dropped: u64 = rendered
        .lines()
        .find_map(|l| l.strip_prefix("tether_debug_events_dropped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(dropped >= 150, "dropped {dropped}");
}

#[tokio::test]
async fn debug_endpoints_refuse_non_loopback_peers_by_default() {
    // Only the peer address decides; the route is exercised in-process.
    let config = common::config_for("http://127.0.0.1:9/v1");
    assert!(!config.server.debug_remote);
    let t = common::start(config).await;
    let (status, _) = common::get(&format!("http://{}/debug/sessions", t.addr)).await;
    assert_eq!(status, 200, "loopback peers are served");
}

#[test]
fn keys_and_content_never_appear_in_logs_metrics_or_debug_output() {
    use std::io::Read;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = "sk-SECRET-9f8e7d6c5b4a";
    let marker = "CONTENT-MARKER-31337";
    let (emu_addr, _emu) = rt.block_on(tether::emulator::spawn(EmulatorConfig::default())).unwrap();
    // Logs go to a file: a pipe nobody reads until the end would fill up.
    let log_path = std::env::temp_dir().join(format!("tether-redaction-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let upstream = format!("http://{emu_addr}/v1");
    let (mut child, addr) = common::spawn_binary(
        &["--listen", "127.0.0.1:0", "--upstream", &upstream, "--log-format", "json"],
        &[("RUST_LOG", "trace"), ("TETHER_UPSTREAM_API_KEY_ENV", "TETHER_TEST_NO_SUCH_KEY")],
        log_file.into(),
    );
    let mut seen = String::new();
    rt.block_on(async {
        let base = format!("http://{addr}/v1");
        let mut c = Conversation::new(&base, secret, true);
        c.input[1]["content"][0]["text"] = serde_json::json!(format!("please handle {marker}"));
        for _ in 0..3 {
            assert_eq!(c.turn().await.status, 200);
        }
        let mut bad = Conversation::new(&base, secret, false);
        bad.input
            .push(serde_json::json!({"type": "function_call_output", "call_id": "nope", "output": marker}));
        assert_eq!(bad.send().await.status, 400);
        common::post_json(&format!("{base}/responses"), format!("{{\"input\": \"{marker}\", bad json")).await;
        for path in ["/metrics", "/debug/sessions"] {
            seen.push_str(&String::from_utf8_lossy(&common::get(&format!("http://{addr}{path}")).await.1));
        }
    });
    let _ = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    child.0.wait().unwrap();
    let mut logs = String::new();
    std::fs::File::open(&log_path).unwrap().read_to_string(&mut logs).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.contains("\"plan\":\"continue\""), "the turn records are in the log: {logs}");
    for (name, text) in [("logs", &logs), ("metrics and debug output", &seen)] {
        assert!(!text.contains(secret) && !text.contains("SECRET"), "API key leaked in {name}");
        assert!(!text.contains(marker), "conversation content leaked in {name}");
    }
}

/// A log sink that fails (disk full: stderr on /dev/full, which answers every
/// write with ENOSPC) must not fail requests. Found by the soak on a full
/// disk: every turn that logged a warning lost its connection.
#[test]
#[cfg(target_os = "linux")]
fn a_full_log_sink_does_not_fail_requests() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (emu_addr, emu) = rt.block_on(tether::emulator::spawn(EmulatorConfig::default())).unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let upstream = format!("http://{emu_addr}/v1");
    let (mut child, addr) = common::spawn_binary(
        &["--listen", "127.0.0.1:0", "--upstream", &upstream],
        &[("RUST_LOG", "debug"), ("TETHER_UPSTREAM_API_KEY_ENV", "TETHER_TEST_NO_SUCH_KEY")],
        full.into(),
    );
    rt.block_on(async {
        let base = format!("http://{addr}/v1");
        for stream in [false, true] {
            let mut c = Conversation::new(&base, "sk-full-disk", stream);
            assert_eq!(c.turn().await.status, 200);
            // A malformed upstream frame (before any byte out: retried) is logged at `warn`.
            emu.inject("ws:malformed_at=0".parse().unwrap());
            assert_eq!(c.turn().await.status, 200);
            assert_eq!(c.turn().await.route.as_deref(), Some("continue"));
        }
    });
    let _ = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    assert!(child.0.wait().unwrap().success(), "tether exits cleanly");
}

#[tokio::test]
async fn closing_ends_every_reader_after_what_was_queued_for_it() {
    let events = tether::events::Events::default();
    let metrics = std::sync::Arc::new(Metrics::default());
    let early = events.sse(metrics.clone(), None);
    tokio::task::yield_now().await;
    events.publish(0, || "{\"n\":1}".to_string());
    events.close();
    // Published and closed before the reader read anything: it gets the
    // record, then the notice, then the end of its stream.
    let body =
        tokio::time::timeout(Duration::from_secs(5), early.into_body().collect()).await.expect("ended");
    let text = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
    let record = text.find("\"n\":1").expect("the queued record");
    let notice = text.find(": tether is shutting down").expect("the notice");
    assert!(record < notice, "{text}");
    // A reader that comes after the close ends at once.
    let late = events.sse(metrics, None);
    let text = tokio::time::timeout(Duration::from_secs(5), late.into_body().collect()).await.expect("ended");
    assert!(String::from_utf8_lossy(&text.unwrap().to_bytes()).contains("shutting down"));
}

#[tokio::test]
async fn an_open_event_reader_does_not_hold_up_shutdown() {
    let (_emu, mut t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let tap = EventTap::start(t.addr).await;
    let mut c = Conversation::new(&t.base(), "sk-tap", false);
    assert_eq!(c.turn().await.status, 200);
    tap.wait_for(1).await;
    t.stop();
    // Far less than the grace: the reader's stream ends when the drain begins.
    tokio::time::timeout(Duration::from_secs(10), &mut t.done).await.expect("shut down").unwrap();
}

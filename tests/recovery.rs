//! Every row of the recovery table (docs/ARCHITECTURE.md §2), end to end,
//! each provoked by an emulator fault. After each recovery the conversation
//! goes on, and the oracle finds no context that differs from what the
//! client sent.

mod common;

use std::time::Duration;

use common::{Conversation, Reply};
use tether::emulator::{EmulatorConfig, Fault, WsMode};

fn fault(s: &str) -> Fault {
    s.parse().expect("fault syntax")
}

fn error_code(reply: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("json error body");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// Sends a turn that must succeed; returns (response id, input sent).
async fn ok_turn(c: &mut Conversation, route: &str) -> (String, Vec<serde_json::Value>) {
    let sent = c.input.clone();
    let reply = c.turn().await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.route.as_deref(), Some(route), "route");
    (reply.response()["id"].as_str().expect("id").to_string(), sent)
}

#[tokio::test]
async fn previous_response_not_found_is_retried_fresh_on_the_same_socket() {
    for stream in [false, true] {
        let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
        let mut c = Conversation::new(&t.base(), "sk-a", stream);
        let a = ok_turn(&mut c, "fresh").await;
        emu.inject(fault("ws:evict"));
        let b = ok_turn(&mut c, "fresh").await;
        let d = ok_turn(&mut c, "continue").await;
        common::assert_oracle_clean(&emu, &[a, b, d]);
        assert_eq!(emu.stats().ws_connections, 1, "retried on the same socket");
        assert!(
            common::metric(t.addr, "tether_recoveries_total{kind=\"previous_response_not_found->fresh\"}")
                .await
                > 0.0
        );
    }
}

#[tokio::test]
async fn socket_lost_before_any_byte_is_retried_on_a_new_socket() {
    for stream in [false, true] {
        let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
        let mut c = Conversation::new(&t.base(), "sk-a", stream);
        let a = ok_turn(&mut c, "fresh").await;
        emu.inject(fault("ws:drop_after=0"));
        let b = ok_turn(&mut c, "fresh").await;
        let d = ok_turn(&mut c, "continue").await;
        common::assert_oracle_clean(&emu, &[a, b, d]);
        assert_eq!(emu.stats().ws_connections, 2, "a new socket for the retry");
    }
}

#[tokio::test]
async fn non_streaming_failure_mid_response_is_still_invisible() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let mut c = Conversation::new(&t.base(), "sk-a", false);
    let a = ok_turn(&mut c, "fresh").await;
    emu.inject(fault("ws:drop_after=3"));
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
}

#[tokio::test]
async fn streaming_failure_after_bytes_went_out_ends_with_an_sse_error() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let mut c = Conversation::new(&t.base(), "sk-a", true);
    let a = ok_turn(&mut c, "fresh").await;
    emu.inject(fault("ws:drop_after=3"));
    let reply = c.turn().await;
    assert_eq!(reply.status, 200);
    let events = reply.event_types();
    assert_eq!(events.len(), 4, "three events, then the error: {events:?}");
    assert_eq!(events.last().map(String::as_str), Some("error"));
    assert!(!events.iter().any(|e| e == "response.completed"), "never two responses spliced into one");
    // The client retries the same turn: it is sent whole (the parent was
    // evicted), then the conversation continues.
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
}

#[tokio::test]
async fn error_frames_before_any_byte_become_that_status_and_evict_the_parent() {
    for (stream, spec, status, code) in [
        (false, "ws:error_at=0:500:server_error", 500, "server_error"),
        (true, "ws:error_at=0:500:server_error", 500, "server_error"),
        (true, "ws:rate_limit", 429, "rate_limit_exceeded"),
        (false, "ws:rate_limit", 429, "rate_limit_exceeded"),
    ] {
        let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
        let mut c = Conversation::new(&t.base(), "sk-a", stream);
        let a = ok_turn(&mut c, "fresh").await;
        emu.inject(fault(spec));
        let reply = c.turn().await;
        assert_eq!(reply.status, status, "{spec}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(error_code(&reply), code, "{spec}: a plain JSON error, even for stream:true");
        let b = ok_turn(&mut c, "fresh").await;
        let d = ok_turn(&mut c, "continue").await;
        common::assert_oracle_clean(&emu, &[a, b, d]);
    }
}

#[tokio::test]
async fn malformed_frame_before_any_byte_is_retried() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let mut c = Conversation::new(&t.base(), "sk-a", true);
    let a = ok_turn(&mut c, "fresh").await;
    emu.inject(fault("ws:malformed_at=0"));
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
}

#[tokio::test]
async fn upgrade_401_reaches_the_client_unchanged() {
    let emu_config =
        EmulatorConfig { accepted_keys: Some(vec!["sk-good".into()]), ..EmulatorConfig::default() };
    let (addr, _emu) = tether::emulator::spawn(emu_config).await.expect("emulator");
    let t = common::start(common::config_for(&format!("http://{addr}/v1"))).await;
    let bad = Conversation::new(&t.base(), "sk-bad", true);
    let reply = bad.send().await;
    assert_eq!(reply.status, 401);
    // The same body the service gives a plain HTTP client with that key.
    let direct = Conversation { base: format!("http://{addr}/v1"), ..bad };
    let direct_reply = direct.send().await;
    assert_eq!(direct_reply.status, 401);
    assert_eq!(error_code(&reply), error_code(&direct_reply));
    let mut good = Conversation::new(&t.base(), "sk-good", true);
    ok_turn(&mut good, "fresh").await;
    ok_turn(&mut good, "continue").await;
}

#[tokio::test]
async fn refused_websocket_mode_falls_back_to_http() {
    for mode in [WsMode::Refuse426, WsMode::Refuse404] {
        let (emu, t) =
            common::emulator_and_tether(EmulatorConfig { ws: mode, ..EmulatorConfig::default() }, |_| {})
                .await;
        let mut c = Conversation::new(&t.base(), "sk-a", true);
        let a = ok_turn(&mut c, "http_fallback").await;
        let b = ok_turn(&mut c, "http_fallback").await;
        common::assert_oracle_clean(&emu, &[a, b]);
        let stats = emu.stats();
        assert_eq!((stats.requests_http, stats.requests_ws), (2, 0));
        assert!(
            common::metric(t.addr, "tether_http_fallbacks_total{reason=\"websocket_refused\"}").await > 0.0
        );
    }
}

#[tokio::test]
async fn refused_websocket_mode_without_fallback_is_a_502() {
    let (_emu, t) = common::emulator_and_tether(
        EmulatorConfig { ws: WsMode::Refuse426, ..EmulatorConfig::default() },
        |c| {
            c.upstream.fallback_http = false;
        },
    )
    .await;
    let reply = Conversation::new(&t.base(), "sk-a", false).send().await;
    assert_eq!(reply.status, 502, "{}", String::from_utf8_lossy(&reply.body));
}

#[tokio::test]
async fn connection_age_limit_is_retried_on_a_new_socket() {
    let emu_config =
        EmulatorConfig { max_connection_age: Duration::from_millis(300), ..EmulatorConfig::default() };
    let (emu, t) = common::emulator_and_tether(emu_config, |_| {}).await;
    let mut c = Conversation::new(&t.base(), "sk-a", true);
    let a = ok_turn(&mut c, "fresh").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
    assert_eq!(emu.stats().ws_connections, 2);
}

#[tokio::test]
async fn sockets_are_rotated_at_max_age_between_turns() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.pool.max_age = Duration::from_millis(300);
    })
    .await;
    let mut c = Conversation::new(&t.base(), "sk-a", false);
    let a = ok_turn(&mut c, "fresh").await;
    let b = ok_turn(&mut c, "continue").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d = ok_turn(&mut c, "fresh").await;
    let e = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d, e]);
    assert_eq!(emu.stats().ws_connections, 2, "the old socket was rotated, a new one opened");
}

#[tokio::test]
async fn silent_socket_is_declared_dead_and_the_turn_retried() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.pool.ping_interval = Duration::from_millis(50);
        c.pool.pong_timeout = Duration::from_millis(250);
    })
    .await;
    let mut c = Conversation::new(&t.base(), "sk-a", true);
    let a = ok_turn(&mut c, "fresh").await;
    emu.inject(fault("ws:no_pong"));
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
    assert_eq!(emu.stats().ws_connections, 2);
}

#[tokio::test]
async fn client_hang_up_mid_stream_drains_the_response_and_frees_the_socket() {
    use http_body_util::BodyExt;
    // One socket allowed: the retry below can only run once the drain freed it.
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.pool.per_tenant = 1;
        c.pool.total = 1;
    })
    .await;
    let mut c = Conversation::new(&t.base(), "sk-a", true);
    let a = ok_turn(&mut c, "fresh").await;
    emu.inject(fault("ws:slow=20"));
    let req = http::Request::post(format!("{}/responses", c.base))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-a")
        .body(http_body_util::Full::new(bytes::Bytes::from(c.body().to_string())))
        .expect("request");
    let resp = common::client().request(req).await.expect("response");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.data_ref().is_some_and(|d| d.starts_with(b"event: response.created")));
    drop(body);
    // The upstream response runs to its end on the socket…
    let completed_before = emu.stats().completed;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while emu.stats().completed == completed_before {
        assert!(tokio::time::Instant::now() < deadline, "upstream response was not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and the same socket serves the client's retry of that turn.
    let b = ok_turn(&mut c, "fresh").await;
    let d = ok_turn(&mut c, "continue").await;
    common::assert_oracle_clean(&emu, &[a, b, d]);
    assert_eq!(emu.stats().ws_connections, 1, "the drained socket was reused, not replaced");
}

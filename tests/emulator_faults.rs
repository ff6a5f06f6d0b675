//! Fault injection, by `EmulatorHandle::inject` and by
//! `metadata.emulator_fault`, over both transports.

#[path = "emulator_support.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tether::emulator::{Fault, FaultKind};
use tokio_tungstenite::tungstenite::Message;

fn body(input: Value) -> Value {
    json!({"model": "gpt-5", "store": false, "input": input, "metadata": {"emulator_script": "tools=0,answer=20"}})
}

fn with_fault(input: Value, fault: &str) -> Value {
    let mut b = body(input);
    b["metadata"]["emulator_fault"] = json!(fault);
    b
}

/// Every text frame until the socket ends; `Some(code)` if a close frame came.
async fn drain(ws: &mut Ws) -> (Vec<String>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => frames.push(t.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frames, frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return (frames, None),
        }
    }
}

#[tokio::test]
async fn drop_after_n_events() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    handle.inject(Fault::ws(FaultKind::DropAfter(3)));
    send_create(&mut ws, &body(json!([user("a")]))).await?;
    let (frames, close) = drain(&mut ws).await;
    assert_eq!((frames.len(), close), (3, None));
    // Over HTTP (metadata syntax): the SSE body is cut.
    let b = with_fault(json!([user("a")]), "drop_after=2");
    let mut sse = b.clone();
    sse["stream"] = json!(true);
    assert!(request(addr, "POST", "/v1/responses", Some(KEY), Some(&sse)).await.is_err());
    assert!(request(addr, "POST", "/v1/responses", Some(KEY), Some(&b)).await.is_err());
    assert_eq!(handle.stats().faults_applied, 3);
    Ok(())
}

#[tokio::test]
async fn error_at_event_n() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &body(json!([user("a")]))).await?)["response"].clone();
    let mut b = with_fault(json!([user("b")]), "error_at=2:500:server_error");
    b["previous_response_id"] = r1["id"].clone();
    let events = ws_turn(&mut ws, &b).await?;
    assert_eq!(types(&events), ["response.created", "response.in_progress", "error"]);
    assert_eq!(events[2]["status"], 500);
    assert_eq!(events[2]["error"]["code"], "server_error");
    assert_eq!(events[2]["error"]["type"], "server_error");
    // The failed continuation evicted its parent.
    let mut again = body(json!([user("b")]));
    again["previous_response_id"] = r1["id"].clone();
    assert_eq!(last(&ws_turn(&mut ws, &again).await?)["error"]["code"], "previous_response_not_found");
    // HTTP SSE: a flat error event in place of event 1; JSON: the status.
    handle.inject(Fault::http(FaultKind::ErrorAt { event: 1, status: 503, code: "overloaded".into() }));
    let (status, text) = post_sse(addr, &body(json!([user("c")]))).await?;
    assert_eq!(status, 200);
    let sse = parse_sse(&text)?;
    assert_eq!(sse.len(), 2);
    assert_eq!(
        (sse[1].0.as_str(), &sse[1].1["code"], &sse[1].1["sequence_number"]),
        ("error", &json!("overloaded"), &json!(1))
    );
    let (status, err) = post(addr, &with_fault(json!([user("d")]), "error_at=0:500:server_error")).await?;
    assert_eq!((status, &err["error"]["code"]), (500, &json!("server_error")));
    Ok(())
}

#[tokio::test]
async fn rate_limit_429() -> Result<()> {
    let (addr, handle) = start_default().await?;
    handle.inject(Fault::any(FaultKind::RateLimit));
    let (status, err) = post(addr, &body(json!("a"))).await?;
    assert_eq!((status, &err["error"]["code"]), (429, &json!("rate_limit_exceeded")));
    assert_eq!(post(addr, &body(json!("a"))).await?.0, 200, "applies once");
    let mut ws = connect(addr).await?;
    let err = ws_turn(&mut ws, &with_fault(json!("a"), "rate_limit")).await?;
    assert_eq!((&err[0]["status"], &err[0]["error"]["code"]), (&json!(429), &json!("rate_limit_exceeded")));
    assert_eq!(err[0]["error"]["type"], "rate_limit_error");
    Ok(())
}

#[tokio::test]
async fn evict_forgets_the_latest() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &body(json!([user("a")]))).await?)["response"].clone();
    handle.inject(Fault::ws(FaultKind::Evict));
    let mut b = body(json!([user("b")]));
    b["previous_response_id"] = r1["id"].clone();
    assert_eq!(last(&ws_turn(&mut ws, &b).await?)["error"]["code"], "previous_response_not_found");
    Ok(())
}

#[tokio::test]
async fn slow_frames() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let started = Instant::now();
    let events = ws_turn(&mut ws, &with_fault(json!("a"), "slow=10")).await?;
    assert!(started.elapsed() >= Duration::from_millis(10 * events.len() as u64));
    Ok(())
}

#[tokio::test]
async fn refused_upgrade_once() -> Result<()> {
    let (addr, handle) = start_default().await?;
    handle.inject("refuse_upgrade=503".parse()?);
    assert_eq!(upgrade_status(addr, Some(KEY)).await?, 503);
    assert_eq!(upgrade_status(addr, Some(KEY)).await?, 101);
    Ok(())
}

#[tokio::test]
async fn malformed_frame() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    send_create(&mut ws, &with_fault(json!("a"), "malformed_at=2")).await?;
    let mut frames = Vec::new();
    while !frames.last().is_some_and(|f: &String| f.contains("response.completed")) {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => frames.push(t.to_string()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert!(serde_json::from_str::<Value>(&frames[2]).is_err());
    assert!(frames.iter().enumerate().all(|(i, f)| i == 2 || serde_json::from_str::<Value>(f).is_ok()));
    Ok(())
}

#[tokio::test]
async fn close_with_code() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    send_create(&mut ws, &with_fault(json!("a"), "ws:close=1011@1")).await?;
    let (frames, close) = drain(&mut ws).await;
    assert_eq!((frames.len(), close), (1, Some(1011)));
    Ok(())
}

#[tokio::test]
async fn no_pong_goes_silent() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    handle.inject(Fault::ws(FaultKind::NoPong));
    send_create(&mut ws, &body(json!("a"))).await?;
    // Let the create reach the worker, which then stops reading.
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.send(Message::Ping(b"x".to_vec().into())).await?;
    let got = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(got.is_err(), "expected silence, got {got:?}");
    Ok(())
}

#[tokio::test]
async fn failed_at_event_n() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &body(json!([user("a")]))).await?)["response"].clone();
    let mut b = with_fault(json!([user("b")]), "failed_at=2");
    b["previous_response_id"] = r1["id"].clone();
    let events = ws_turn(&mut ws, &b).await?;
    assert_eq!(types(&events), ["response.created", "response.in_progress", "response.failed"]);
    let failed = &events[2];
    assert_eq!((&failed["sequence_number"], &failed["response"]["status"]), (&json!(2), &json!("failed")));
    assert_eq!(failed["response"]["error"]["code"], "server_error");
    let mut again = body(json!([user("b")]));
    again["previous_response_id"] = r1["id"].clone();
    assert_eq!(last(&ws_turn(&mut ws, &again).await?)["error"]["code"], "previous_response_not_found");
    let (_, text) = post_sse(addr, &with_fault(json!("c"), "failed_at=1")).await?;
    let sse = parse_sse(&text)?;
    assert_eq!(sse.last().map(|(n, _)| n.as_str()), Some("response.failed"));
    assert_eq!(post(addr, &with_fault(json!("c"), "failed_at=1")).await?.0, 500);
    Ok(())
}

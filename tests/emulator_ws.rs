//! The emulator in WebSocket mode: continuation and cached tokens, queued
//! creates, the store rules, eviction, the age limit, upgrades, warm-ups.

#[path = "emulator_support.rs"]
mod support;

use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tether::emulator::{EmulatorConfig, WsMode};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn continuation_counts_the_parent_as_cached() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let first = json!({"model": "gpt-5", "store": false, "input": [user("list files")],
        "metadata": {"emulator_script": "tools=1,answer=80"}});
    let events = ws_turn(&mut ws, &first).await?;
    assert_eq!(events[0]["type"], "response.created");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
    let r1 = last(&events)["response"].clone();
    assert_eq!(r1["usage"]["input_tokens_details"]["cached_tokens"], 0);
    let calls = output_of(&r1);
    assert_eq!(calls[0]["type"], "function_call");

    let second = json!({"model": "gpt-5", "store": false, "previous_response_id": r1["id"],
        "input": answers(&calls), "metadata": {"emulator_script": "tools=1,answer=80"}});
    let events = ws_turn(&mut ws, &second).await?;
    let r2 = last(&events)["response"].clone();
    assert_eq!(r2["status"], "completed");
    assert_eq!(events[0]["sequence_number"], 0);
    assert_eq!(output_of(&r2)[0]["type"], "message");
    let cached = r2["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    let input = r2["usage"]["input_tokens"].as_u64().unwrap_or(0);
    assert!(cached > 0 && cached < input, "cached {cached} of {input}");
    assert_eq!(r2["previous_response_id"], r1["id"]);

    let records = handle.contexts();
    assert_eq!(records.len(), 2);
    let mut full = vec![user("list files")];
    full.extend(calls.clone());
    full.extend(answers(&calls));
    tether::emulator::oracle::same_context(&full, &records[1].context)?;
    let stats = handle.stats();
    assert_eq!((stats.requests_ws, stats.continuations, stats.fresh, stats.ws_connections), (2, 1, 1, 1));
    Ok(())
}

#[tokio::test]
async fn upgrade_needs_an_accepted_key() -> Result<()> {
    let config = EmulatorConfig { accepted_keys: Some(vec![KEY.into()]), ..EmulatorConfig::default() };
    let (addr, _handle) = start(config).await?;
    assert_eq!(upgrade_status(addr, Some("sk-wrong")).await?, 401);
    assert_eq!(upgrade_status(addr, None).await?, 401);
    assert_eq!(upgrade_status(addr, Some(KEY)).await?, 101);
    Ok(())
}

fn create(input: serde_json::Value, store: bool) -> serde_json::Value {
    json!({"model": "gpt-5", "store": store, "input": input, "metadata": {"emulator_script": "tools=0,answer=20"}})
}

#[tokio::test]
async fn creates_queue_in_order() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    for n in 0..3 {
        let mut body = create(json!([user(&format!("task {n}"))]), false);
        body["metadata"]["n"] = json!(n.to_string());
        send_create(&mut ws, &body).await?;
    }
    for n in 0..3 {
        let events = read_turn(&mut ws).await?;
        assert_eq!(events[0]["type"], "response.created");
        assert_eq!(events[0]["sequence_number"], 0);
        let r = &last(&events)["response"];
        assert_eq!(r["metadata"]["n"], n.to_string());
        assert_eq!(r["status"], "completed");
    }
    assert_eq!(handle.contexts().len(), 3);
    Ok(())
}

#[tokio::test]
async fn store_false_continues_only_the_latest() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &create(json!([user("a")]), false)).await?)["response"].clone();
    let r2 = last(&ws_turn(&mut ws, &create(json!([user("b")]), false)).await?)["response"].clone();
    let mut body = create(json!([user("c")]), false);
    body["previous_response_id"] = r1["id"].clone();
    let err = ws_turn(&mut ws, &body).await?;
    assert_eq!(err.len(), 1);
    let frame = &err[0];
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["status"], 400);
    assert_eq!(frame["error"]["type"], "invalid_request_error");
    assert_eq!(frame["error"]["code"], "previous_response_not_found");
    assert_eq!(frame["error"]["param"], "previous_response_id");
    assert!(frame["error"]["message"].is_string());
    // The latest still works, and a new socket does not know it.
    body["previous_response_id"] = r2["id"].clone();
    assert_eq!(last(&ws_turn(&mut ws, &body).await?)["type"], "response.completed");
    let mut other = connect(addr).await?;
    body["previous_response_id"] = r2["id"].clone();
    assert_eq!(last(&ws_turn(&mut other, &body).await?)["error"]["code"], "previous_response_not_found");
    assert_eq!(handle.stats().errors, 2);
    Ok(())
}

#[tokio::test]
async fn failed_continuation_evicts_its_parent() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &create(json!([user("a")]), false)).await?)["response"].clone();
    let bad = json!([{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]);
    let mut body = create(bad, false);
    body["previous_response_id"] = r1["id"].clone();
    let err = ws_turn(&mut ws, &body).await?;
    assert_eq!(last(&err)["error"]["param"], "input");
    let mut body = create(json!([user("b")]), false);
    body["previous_response_id"] = r1["id"].clone();
    assert_eq!(last(&ws_turn(&mut ws, &body).await?)["error"]["code"], "previous_response_not_found");
    Ok(())
}

#[tokio::test]
async fn stored_responses_continue_from_anywhere_uncached() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &create(json!([user("a")]), true)).await?)["response"].clone();
    let mut body = create(json!([user("b")]), true);
    body["previous_response_id"] = r1["id"].clone();
    let mut other = connect(addr).await?;
    let r2 = last(&ws_turn(&mut other, &body).await?)["response"].clone();
    assert_eq!(r2["status"], "completed");
    assert_eq!(r2["usage"]["input_tokens_details"]["cached_tokens"], 0);
    // Over HTTP too, and GET returns it.
    let (status, r3) = post(addr, &body).await?;
    assert_eq!((status, &r3["status"]), (200, &json!("completed")));
    let (status, got) =
        get(addr, &format!("/v1/responses/{}", r1["id"].as_str().unwrap_or_default())).await?;
    assert_eq!((status, &got["id"]), (200, &r1["id"]));
    // The same connection's latest is cached.
    let mut body = create(json!([user("c")]), true);
    body["previous_response_id"] = r2["id"].clone();
    let r4 = last(&ws_turn(&mut other, &body).await?)["response"].clone();
    assert!(r4["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0) > 0);
    Ok(())
}

#[tokio::test]
async fn age_limit_answers_then_closes() -> Result<()> {
    let config =
        EmulatorConfig { max_connection_age: Duration::from_millis(50), ..EmulatorConfig::default() };
    let (addr, _handle) = start(config).await?;
    let mut ws = connect(addr).await?;
    assert_eq!(
        last(&ws_turn(&mut ws, &create(json!([user("a")]), false)).await?)["type"],
        "response.completed"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let err = ws_turn(&mut ws, &create(json!([user("b")]), false)).await?;
    assert_eq!(last(&err)["error"]["code"], "websocket_connection_limit_reached");
    let next = ws.next().await;
    assert!(matches!(next, Some(Ok(Message::Close(_))) | None | Some(Err(_))), "{next:?}");
    Ok(())
}

#[tokio::test]
async fn refusal_modes() -> Result<()> {
    for (mode, status) in [(WsMode::Refuse426, 426), (WsMode::Refuse404, 404)] {
        let (addr, _handle) = start(EmulatorConfig { ws: mode, ..EmulatorConfig::default() }).await?;
        assert_eq!(upgrade_status(addr, Some(KEY)).await?, status);
        // HTTP keeps working.
        assert_eq!(post(addr, &create(json!("hi"), false)).await?.0, 200);
    }
    Ok(())
}

#[tokio::test]
async fn background_is_rejected() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let mut body = create(json!([user("a")]), false);
    body["background"] = json!(true);
    let err = ws_turn(&mut ws, &body).await?;
    assert_eq!((&err[0]["status"], &err[0]["error"]["param"]), (&json!(400), &json!("background")));
    assert_eq!(post(addr, &body).await?.0, 400);
    Ok(())
}

#[tokio::test]
async fn warmup_becomes_the_latest() -> Result<()> {
    let (addr, _handle) = start(EmulatorConfig { warmup: true, ..EmulatorConfig::default() }).await?;
    let mut ws = connect(addr).await?;
    let system = json!({"role": "developer", "content": "you are an agent ".repeat(50)});
    let mut warm = create(json!([system]), false);
    warm["generate"] = json!(false);
    let events = ws_turn(&mut ws, &warm).await?;
    let r0 = last(&events)["response"].clone();
    assert_eq!(output_of(&r0).len(), 0);
    assert_eq!(r0["usage"]["output_tokens"], 0);
    let mut body = create(json!([user("go")]), false);
    body["previous_response_id"] = r0["id"].clone();
    let r1 = last(&ws_turn(&mut ws, &body).await?)["response"].clone();
    assert_eq!(r1["usage"]["input_tokens_details"]["cached_tokens"], r0["usage"]["input_tokens"]);

    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let err = ws_turn(&mut ws, &warm).await?;
    assert_eq!(err[0]["error"]["code"], "unknown_parameter");
    Ok(())
}

#[tokio::test]
async fn server_pings_and_answers_pings() -> Result<()> {
    let config =
        EmulatorConfig { ping_interval: Some(Duration::from_millis(20)), ..EmulatorConfig::default() };
    let (addr, _handle) = start(config).await?;
    let mut ws = connect(addr).await?;
    ws.send(Message::Ping(b"hi".to_vec().into())).await?;
    let (mut ping, mut pong) = (false, false);
    while !(ping && pong) {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await? {
            Some(Ok(Message::Ping(_))) => ping = true,
            Some(Ok(Message::Pong(p))) => pong = p.as_ref() == b"hi",
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn frames_that_are_not_creates_get_error_frames() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    ws.send(Message::text("not json")).await?;
    assert_eq!(read_turn(&mut ws).await?[0]["status"], 400);
    ws.send(Message::text(r#"{"type":"response.cancel"}"#)).await?;
    assert_eq!(read_turn(&mut ws).await?[0]["error"]["param"], "type");
    ws.send(Message::binary(b"{}".to_vec())).await?;
    assert_eq!(read_turn(&mut ws).await?[0]["type"], "error");
    // The connection still works.
    let events = ws_turn(&mut ws, &create(json!("hi"), false)).await?;
    assert_eq!(last(&events)["type"], "response.completed");
    let stats = handle.stats();
    assert_eq!((stats.requests_ws, stats.errors), (4, 3));
    assert_eq!(stats.bytes_received_ws, stats.bytes_received);
    Ok(())
}

#[tokio::test]
async fn reasoning_is_encrypted_only_when_asked() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let mut body = create(json!("hi"), false);
    body["metadata"]["emulator_script"] = json!("tools=0,reasoning=1");
    let plain = output_of(&last(&ws_turn(&mut ws, &body).await?)["response"]);
    assert_eq!(plain[0]["type"], "reasoning");
    assert!(plain[0]["id"].as_str().is_some_and(|id| id.starts_with("rs_")));
    assert!(plain[0].get("encrypted_content").is_none());
    body["include"] = json!(["reasoning.encrypted_content"]);
    let sealed = output_of(&last(&ws_turn(&mut ws, &body).await?)["response"]);
    assert!(sealed[0]["encrypted_content"].is_string());
    let again = output_of(&last(&ws_turn(&mut ws, &body).await?)["response"]);
    assert_eq!(again[0]["encrypted_content"], sealed[0]["encrypted_content"]);
    assert_eq!(
        last(&ws_turn(&mut ws, &body).await?)["response"]["usage"]["output_tokens_details"]["reasoning_tokens"],
        16
    );
    Ok(())
}

/// The socket is read while a response plays: a ping sent mid-turn is
/// answered before the turn ends, and the turn still completes.
#[tokio::test]
async fn pings_are_answered_while_a_response_plays() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    let mut body = create(json!([user("slowly")]), false);
    body["metadata"]["emulator_fault"] = json!("slow=50");
    send_create(&mut ws, &body).await?;
    ws.send(Message::Ping(b"mid".to_vec().into())).await?;
    let (mut pong_at, mut kinds) = (None, Vec::new());
    while kinds.last().map(String::as_str) != Some("response.completed") {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await? {
            Some(Ok(Message::Pong(p))) if p.as_ref() == b"mid" => pong_at = Some(kinds.len()),
            Some(Ok(Message::Text(text))) => {
                let event: serde_json::Value = serde_json::from_str(&text)?;
                kinds.push(event["type"].as_str().unwrap_or_default().to_owned());
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    let pong_at = pong_at.ok_or_else(|| anyhow::anyhow!("no pong during the turn"))?;
    assert!(pong_at < kinds.len() - 1, "pong after {pong_at} of {} events", kinds.len());
    Ok(())
}

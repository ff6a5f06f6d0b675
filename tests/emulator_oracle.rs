//! The oracle records and routes, `same_context`, determinism across
//! transports, honest cached tokens over HTTP, and the emulator's lifecycle.

#[path = "emulator_support.rs"]
mod support;

use anyhow::Result;
use serde_json::{Value, json};
use support::*;
use tether::emulator::oracle::same_context;
use tether::emulator::{CostModel, EmulatorConfig, Transport};

const SCRIPT: &str = "tools=2,parallel=1,args=150,answer=120,reasoning=1";

fn settings(input: Value) -> Value {
    json!({"model": "gpt-5", "store": false, "input": input, "include": ["reasoning.encrypted_content"],
        "instructions": "be brief", "tools": [{"type": "function", "name": "exec_command", "parameters": {}}],
        "metadata": {"emulator_script": SCRIPT}})
}

/// Echoes output items the way Codex does: ids kept, `content: null` on reasoning.
fn echo(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if i["type"] == "reasoning" {
                i["content"] = Value::Null;
            }
            i
        })
        .collect()
}

/// A full agent loop over HTTP (whole history each time); returns outputs per turn.
async fn http_loop(addr: std::net::SocketAddr) -> Result<(Vec<Vec<Value>>, Vec<Value>)> {
    let mut history = vec![json!({"role": "developer", "content": "system prompt"}), user("fix the bug")];
    let mut outputs = Vec::new();
    loop {
        let (status, r) = post(addr, &settings(json!(history))).await?;
        assert_eq!(status, 200, "{r}");
        let out = output_of(&r);
        history.extend(echo(&out));
        history.extend(answers(&out));
        let done = out.iter().any(|i| i["type"] == "message");
        outputs.push(out);
        if done {
            return Ok((outputs, history));
        }
    }
}

/// The same loop over one WebSocket, sending only deltas.
async fn ws_loop(addr: std::net::SocketAddr) -> Result<(Vec<Vec<Value>>, Vec<Value>)> {
    let mut ws = connect(addr).await?;
    let mut history = vec![json!({"role": "developer", "content": "system prompt"}), user("fix the bug")];
    let mut delta = history.clone();
    let mut previous = Value::Null;
    let mut outputs = Vec::new();
    loop {
        let mut body = settings(json!(delta));
        body["previous_response_id"] = previous;
        let r = last(&ws_turn(&mut ws, &body).await?)["response"].clone();
        assert_eq!(r["status"], "completed", "{r}");
        previous = r["id"].clone();
        let out = output_of(&r);
        delta = answers(&out);
        history.extend(out.clone());
        history.extend(delta.clone());
        let done = out.iter().any(|i| i["type"] == "message");
        outputs.push(out);
        if done {
            return Ok((outputs, history));
        }
    }
}

#[tokio::test]
async fn same_context_same_output_over_http_and_ws() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let (http_out, http_history) = http_loop(addr).await?;
    let http_records = handle.contexts();
    handle.reset();
    let (ws_out, ws_history) = ws_loop(addr).await?;
    let ws_records = handle.contexts();
    assert_eq!(http_out.len(), 3);
    assert_eq!(ws_out.len(), 3);
    for (h, w) in http_out.iter().zip(&ws_out) {
        same_context(h, w)?;
        assert_eq!(h[0]["type"], "reasoning");
        assert!(h[0]["encrypted_content"].is_string());
    }
    same_context(&http_history, &ws_history)?;
    // The oracle saw the same contexts on both transports.
    for (h, w) in http_records.iter().zip(&ws_records) {
        assert_eq!((h.transport, w.transport), (Transport::Http, Transport::Ws));
        same_context(&h.context, &w.context)?;
        assert_eq!(h.instructions.as_deref(), Some("be brief"));
    }
    assert!(ws_records[1].previous_response_id.is_some());
    // A wrong history is caught.
    let mut wrong = http_history.clone();
    wrong[1] = user("fix another bug");
    let mismatch = same_context(&wrong, &ws_history).err().map(|m| m.index);
    assert_eq!(mismatch, Some(1));
    assert!(same_context(&http_history[..3], &ws_history).is_err());
    Ok(())
}

#[tokio::test]
async fn oracle_routes_have_stable_json() -> Result<()> {
    let (addr, handle) = start_default().await?;
    post(addr, &settings(json!("hello"))).await?;
    let (status, contexts) = get(addr, "/_emulator/contexts").await?;
    assert_eq!(status, 200);
    let record = &contexts[0];
    let mut keys: Vec<&str> =
        record.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(keys, ["context", "instructions", "previous_response_id", "response_id", "transport"]);
    assert_eq!(record["transport"], "http");
    assert_eq!(record["context"], json!([{"type": "message", "role": "user", "content": "hello"}]));
    let (_, stats) = get(addr, "/_emulator/stats").await?;
    for key in ["requests_http", "requests_ws", "continuations", "fresh", "bytes_received", "errors"] {
        assert!(stats[key].is_u64(), "{key} in {stats}");
    }
    assert_eq!(stats["requests_http"], 1);
    // Draining hands the records over once; the stats stay.
    assert_eq!(handle.take_contexts().len(), 1);
    assert!(handle.take_contexts().is_empty());
    assert_eq!(handle.stats().requests_http, 1);
    handle.reset();
    assert!(handle.contexts().is_empty());
    assert_eq!(handle.stats().requests_http, 0);
    let (status, models) = get(addr, "/v1/models").await?;
    assert_eq!((status, &models["object"]), (200, &json!("list")));
    Ok(())
}

#[tokio::test]
async fn http_prefix_cache_hits_at_the_configured_rate() -> Result<()> {
    for (rate, expect_cached) in [(1.0, true), (0.0, false)] {
        let cost = CostModel { http_prefix_cache_hit_rate: rate, ..CostModel::zero() };
        let (addr, handle) = start(EmulatorConfig { cost, ..EmulatorConfig::default() }).await?;
        let (_, history) = http_loop(addr).await?;
        let stats = handle.stats();
        assert_eq!(stats.cached_tokens > 0, expect_cached, "rate {rate}: {stats:?}");
        let (_, r) = post(addr, &settings(json!(history[..2]))).await?;
        let cached = r["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
        assert!(cached < r["usage"]["input_tokens"].as_u64().unwrap_or(0));
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_accepting() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut ws = connect(addr).await?;
    handle.shutdown();
    let (frames, _) = {
        use futures_util::StreamExt;
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), ws.next()).await?;
        (next, ())
    };
    assert!(!matches!(frames, Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(post(addr, &settings(json!("x"))).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_loops_keep_their_contexts_apart() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        tasks.spawn(async move { ws_loop(addr).await });
        tasks.spawn(async move { http_loop(addr).await });
    }
    let mut histories = Vec::new();
    while let Some(result) = tasks.join_next().await {
        histories.push(result??.1);
    }
    for pair in histories.windows(2) {
        same_context(&pair[0], &pair[1])?;
    }
    let stats = handle.stats();
    assert_eq!((stats.requests_ws, stats.requests_http, stats.errors), (24, 24, 0));
    assert_eq!(handle.contexts().len(), 48);
    Ok(())
}

//! The emulator's request validation, with the real error shapes, over
//! both transports.

#[path = "emulator_support.rs"]
mod support;

use anyhow::Result;
use serde_json::{Value, json};
use support::*;

fn body(input: Value, store: bool) -> Value {
    json!({"model": "gpt-5", "store": store, "input": input, "metadata": {"emulator_script": "tools=0"}})
}

/// Sends over HTTP and WS; both must give 400 invalid_request_error with `param`.
async fn rejects(addr: std::net::SocketAddr, body: &Value, param: &str, needle: &str) -> Result<()> {
    let (status, http) = post(addr, body).await?;
    assert_eq!(status, 400, "{http}");
    assert_eq!(http["error"]["type"], "invalid_request_error");
    assert_eq!(http["error"]["param"], param, "{http}");
    let message = http["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{message}");
    let mut ws = connect(addr).await?;
    let frames = ws_turn(&mut ws, body).await?;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["status"], 400);
    assert_eq!(frames[0]["error"], http["error"]);
    Ok(())
}

#[tokio::test]
async fn malformed_items() -> Result<()> {
    let (addr, handle) = start_default().await?;
    rejects(addr, &body(json!(["just a string"]), true), "input", "expected an object").await?;
    rejects(addr, &body(json!([{"type": "teleport"}]), true), "input", "teleport").await?;
    rejects(addr, &body(json!([{"role": "user"}]), true), "input", "content").await?;
    rejects(addr, &body(json!([{"role": "robot", "content": "x"}]), true), "input", "role").await?;
    rejects(
        addr,
        &body(json!([{"type": "function_call", "call_id": "c", "name": "f"}]), true),
        "input",
        "arguments",
    )
    .await?;
    rejects(addr, &body(json!(42), true), "input", "input").await?;
    assert_eq!(handle.stats().errors, 12);
    assert!(handle.contexts().is_empty());
    Ok(())
}

#[tokio::test]
async fn tool_calls_and_outputs_pair_up() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let call = json!({"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": "call_1", "output": "ok"});
    rejects(addr, &body(json!([user("x"), call.clone()]), true), "input", "No tool output found").await?;
    rejects(addr, &body(json!([user("x"), output.clone()]), true), "input", "No tool call found").await?;
    let (status, _) = post(addr, &body(json!([user("x"), call, output]), true)).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn pairing_spans_the_parent_chain() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut first = body(json!([user("x")]), true);
    first["metadata"]["emulator_script"] = json!("tools=1");
    let (_, r1) = post(addr, &first).await?;
    let calls = output_of(&r1);
    let mut next = body(json!(answers(&calls)), true);
    next["previous_response_id"] = r1["id"].clone();
    let (status, r2) = post(addr, &next).await?;
    assert_eq!((status, &r2["status"]), (200, &json!("completed")));
    // A continuation that leaves the parent's call unanswered fails.
    next["input"] = json!([user("never mind")]);
    let (status, err) = post(addr, &next).await?;
    assert_eq!((status, &err["error"]["param"]), (400, &json!("input")));
    Ok(())
}

#[tokio::test]
async fn store_false_reasoning_needs_encrypted_content() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let bare = json!({"type": "reasoning", "id": "rs_1", "summary": []});
    rejects(addr, &body(json!([user("x"), bare.clone()]), false), "input", "store").await?;
    assert_eq!(post(addr, &body(json!([user("x"), bare]), true)).await?.0, 200);
    let sealed = json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"});
    assert_eq!(post(addr, &body(json!([user("x"), sealed]), false)).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn unknown_previous_response_id() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let mut b = body(json!([user("x")]), false);
    b["previous_response_id"] = json!("resp_missing");
    let (status, err) = post(addr, &b).await?;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "previous_response_not_found");
    assert_eq!(err["error"]["param"], "previous_response_id");
    // Over HTTP a store:false response cannot be continued.
    let (_, r1) = post(addr, &body(json!([user("x")]), false)).await?;
    b["previous_response_id"] = r1["id"].clone();
    assert_eq!(post(addr, &b).await?.1["error"]["code"], "previous_response_not_found");
    assert_eq!(get(addr, &format!("/v1/responses/{}", r1["id"].as_str().unwrap_or_default())).await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn bad_json_bad_key_and_bad_script() -> Result<()> {
    let config =
        tether::emulator::EmulatorConfig { accepted_keys: Some(vec![KEY.into()]), ..Default::default() };
    let (addr, _handle) = start(config).await?;
    let (status, bytes) = request(addr, "POST", "/v1/responses", Some("sk-other"), Some(&json!({}))).await?;
    assert_eq!(status, 401);
    let err: Value = serde_json::from_slice(&bytes)?;
    assert!(err["error"]["message"].is_string());
    assert_eq!(request(addr, "POST", "/v1/responses", None, Some(&json!({}))).await?.0, 401);
    assert_eq!(request(addr, "POST", "/v1/responses", Some(KEY), Some(&json!([1]))).await?.0, 400);
    let mut b = body(json!("x"), true);
    b["metadata"]["emulator_script"] = json!("tools=lots");
    assert_eq!(post(addr, &b).await?.0, 400);
    b["metadata"] = json!({"emulator_fault": "explode"});
    assert_eq!(post(addr, &b).await?.1["error"]["param"], "metadata.emulator_fault");
    Ok(())
}

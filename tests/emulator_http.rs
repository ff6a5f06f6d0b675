//! The emulator over plain HTTP: JSON and SSE replies, stored responses,
//! auth, models, the oracle routes.

#[path = "emulator_support.rs"]
mod support;

use anyhow::Result;
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn json_reply_is_a_full_response() -> Result<()> {
    let (addr, handle) = start_default().await?;
    let body =
        json!({"model": "gpt-5", "input": "hello", "metadata": {"emulator_script": "tools=0,answer=40"}});
    let (status, r) = post(addr, &body).await?;
    assert_eq!(status, 200);
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert!(r["id"].as_str().is_some_and(|id| id.starts_with("resp_")));
    let out = output_of(&r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "message");
    assert!(out[0]["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(out[0]["content"][0]["text"].as_str().map(str::len), Some(40));
    assert_eq!(r["usage"]["output_tokens"], 10);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(r["model"], "gpt-5");
    let stats = handle.stats();
    assert_eq!((stats.requests_http, stats.fresh, stats.errors), (1, 1, 0));
    assert_eq!(stats.bytes_received, body.to_string().len() as u64);
    Ok(())
}

#[tokio::test]
async fn sse_text_turn_has_the_exact_sequence() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let body = json!({"model": "gpt-5", "input": "hi", "metadata": {"emulator_script": "tools=0,answer=100,delta=40"}});
    let (status, text) = post_sse(addr, &body).await?;
    assert_eq!(status, 200);
    assert!(!text.contains("[DONE]"));
    let events = parse_sse(&text)?;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    let completed = &events[10].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(output_of(completed).len(), 1);
    assert!(completed["usage"]["total_tokens"].as_u64().is_some());
    let text: String = events.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
    assert_eq!(json!(text), completed["output"][0]["content"][0]["text"]);
    Ok(())
}

#[tokio::test]
async fn sse_tool_call_uses_argument_deltas() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let tools = json!([{"type": "function", "name": "shell", "parameters": {}}]);
    let body = json!({"model": "gpt-5", "input": "hi", "tools": tools,
        "metadata": {"emulator_script": "tools=2,parallel=2,args=100,delta=64"}});
    let (_, text) = post_sse(addr, &body).await?;
    let events = parse_sse(&text)?;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let one_call = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ];
    let mut expected = vec!["response.created", "response.in_progress"];
    expected.extend(one_call);
    expected.extend(one_call);
    expected.push("response.completed");
    assert_eq!(names, expected);
    let completed = &events.last().map(|(_, d)| d["response"].clone()).unwrap_or_default();
    let calls = output_of(completed);
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call["name"], "shell");
        assert_eq!(call["status"], "completed");
        assert!(call["id"].as_str().is_some_and(|id| id.starts_with("fc_")));
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap_or_default())?;
        assert!(args["cmd"].is_string());
    }
    assert_ne!(calls[0]["call_id"], calls[1]["call_id"]);
    Ok(())
}

#[tokio::test]
async fn streaming_validation_errors_are_plain_json() -> Result<()> {
    let (addr, _handle) = start_default().await?;
    let body = json!({"model": "gpt-5", "input": [{"type": "teleport"}]});
    let (status, text) = post_sse(addr, &body).await?;
    assert_eq!(status, 400);
    let err: Value = serde_json::from_str(&text)?;
    assert_eq!(err["error"]["type"], "invalid_request_error");
    Ok(())
}

//! The emulator in WebSocket mode: continuation and cached tokens, queued
//! creates, the store rules, eviction, the age limit, upgrades, warm-ups.

#[path = "emulator_support.rs"]
mod support;

use anyhow::Result;
use serde_json::json;
use support::*;
use tether::emulator::EmulatorConfig;

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
    let cached = r2["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
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
    assert_eq!(
        (
            stats.requests_ws,
            stats.continuations,
            stats.fresh,
            stats.ws_connections
        ),
        (2, 1, 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn upgrade_needs_an_accepted_key() -> Result<()> {
    let config = EmulatorConfig {
        accepted_keys: Some(vec![KEY.into()]),
        ..EmulatorConfig::default()
    };
    let (addr, _handle) = start(config).await?;
    assert_eq!(upgrade_status(addr, Some("sk-wrong")).await?, 401);
    assert_eq!(upgrade_status(addr, None).await?, 401);
    assert_eq!(upgrade_status(addr, Some(KEY)).await?, 101);
    Ok(())
}

//! The cost model: delays are paid where the model says, cached tokens are
//! honest, and the zero profile adds nothing.

#[path = "emulator_support.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use support::*;
use tether::emulator::{CostModel, EmulatorConfig, profile};

fn body(input: Value) -> Value {
    json!({"model": "gpt-5", "store": false, "input": input, "metadata": {"emulator_script": "tools=1,args=40,answer=40"}})
}

#[tokio::test]
async fn per_request_and_decode_delays_are_paid() -> Result<()> {
    let cost = CostModel {
        per_request: Duration::from_millis(40),
        decode_per_output_token: Duration::from_millis(2),
        ..CostModel::zero()
    };
    let (addr, _handle) = start(EmulatorConfig { cost, ..EmulatorConfig::default() }).await?;
    let started = Instant::now();
    let (_, r) = post(addr, &body(json!("hi"))).await?;
    let output_tokens = r["usage"]["output_tokens"].as_u64().unwrap_or(0);
    assert!(output_tokens >= 10);
    assert!(started.elapsed() >= Duration::from_millis(40 + 2 * output_tokens), "{:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn prefill_makes_continuations_faster_than_replays() -> Result<()> {
    let cost = CostModel { prefill_per_uncached_token: Duration::from_micros(200), ..CostModel::zero() };
    let (addr, _handle) = start(EmulatorConfig { cost, ..EmulatorConfig::default() }).await?;
    let history = vec![json!({"role": "developer", "content": "x".repeat(4000)}), user("go")];
    let mut ws = connect(addr).await?;
    let r1 = last(&ws_turn(&mut ws, &body(json!(history))).await?)["response"].clone();
    let delta = answers(&output_of(&r1));
    let mut replay = history.clone();
    replay.extend(output_of(&r1));
    replay.extend(delta.clone());

    let started = Instant::now();
    let (_, over_http) = post(addr, &body(json!(replay))).await?;
    let http_time = started.elapsed();
    let mut continuation = body(json!(delta));
    continuation["previous_response_id"] = r1["id"].clone();
    let started = Instant::now();
    let over_ws = last(&ws_turn(&mut ws, &continuation).await?)["response"].clone();
    let ws_time = started.elapsed();
    assert_eq!(over_http["usage"]["input_tokens"], over_ws["usage"]["input_tokens"]);
    assert_eq!(over_http["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert!(over_ws["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0) > 1000);
    assert!(http_time >= Duration::from_millis(200), "{http_time:?}");
    assert!(ws_time < http_time, "{ws_time:?} vs {http_time:?}");
    Ok(())
}

#[tokio::test]
async fn handshake_is_paid_per_connection() -> Result<()> {
    let cost = CostModel { handshake: Duration::from_millis(50), ..CostModel::zero() };
    let (addr, _handle) = start(EmulatorConfig { cost, ..EmulatorConfig::default() }).await?;
    let started = Instant::now();
    let mut ws = connect(addr).await?;
    assert!(started.elapsed() >= Duration::from_millis(50));
    let started = Instant::now();
    ws_turn(&mut ws, &body(json!("hi"))).await?;
    assert!(started.elapsed() < Duration::from_millis(50));
    Ok(())
}

#[test]
fn profiles() {
    assert_eq!(profile("zero"), Some(CostModel::zero()));
    let illustrative = profile("illustrative").unwrap_or_else(CostModel::zero);
    assert_eq!(illustrative.handshake, Duration::from_millis(150));
    assert_eq!(illustrative.per_request, Duration::from_millis(40));
    assert!(profile("warp").is_none());
}

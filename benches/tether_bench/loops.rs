//! `loop` (the 30-turn agent loop, direct vs through tether, under the zero
//! and illustrative profiles) and `large` (one conversation growing to 1 MB).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tether::agent::{self, LoopSpec};
use tether::emulator::{self, CostModel};

use crate::common;

pub async fn agent_loop(tool_calls: usize, profiles: &[&str]) -> anyhow::Result<Value> {
    let mut out = json!({});
    for name in profiles {
        let cost = emulator::profile(name).ok_or_else(|| anyhow::anyhow!("no profile {name}"))?;
        let (upstream, emu) = common::emulator(cost, true).await?;
        let spec = LoopSpec { tool_calls, ..LoopSpec::default() };
        let direct = agent::run(&upstream, &spec).await?;
        let d = emu.stats();
        let direct_mismatch = tether::demo::oracle_mismatches(&emu, &direct);
        emu.reset();
        let tether = common::tether(&upstream, |_| {}).await?;
        let through = agent::run(&format!("http://{tether}/v1"), &spec).await?;
        let t = emu.stats();
        let later = &through.turns[1..];
        let cached: u64 = later.iter().map(|x| x.cached_tokens).sum();
        let input: u64 = later.iter().map(|x| x.input_tokens).sum();
        let ms = |r: &agent::LoopReport| r.turns.iter().map(|x| x.elapsed.as_secs_f64() * 1e3).sum::<f64>();
        out[*name] = json!({
            "turns": through.turns.len(),
            "continued": through.turns.iter().filter(|x| x.route.as_deref() == Some("continue")).count(),
            "direct_upstream_bytes": d.bytes_received, "tether_upstream_bytes": t.bytes_received,
            "bytes_ratio": t.bytes_received as f64 / d.bytes_received.max(1) as f64,
            "direct_input_bytes": d.input_bytes_received, "tether_input_bytes": t.input_bytes_received,
            "input_bytes_ratio": t.input_bytes_received as f64 / d.input_bytes_received.max(1) as f64,
            "cached_token_share": cached as f64 / input.max(1) as f64,
            "direct_ms": ms(&direct), "tether_ms": ms(&through),
            "oracle_mismatches": direct_mismatch + tether::demo::oracle_mismatches(&emu, &through),
        });
    }
    Ok(out)
}

/// Grows one conversation to ~1 MB through tether, then measures tether's
/// own time per turn at that size (`prepare_ms` of the decision records:
/// body received -> frame sent, i.e. parse, fingerprint, plan, checkout and
/// frame building) against parsing the same body once with serde_json.
pub async fn large(target_bytes: usize, samples: usize) -> anyhow::Result<Value> {
    let (upstream, _emu) = common::emulator(CostModel::zero(), false).await?;
    let addr = common::tether(&upstream, |_| {}).await?;
    let tap = crate::events::Tap::start(addr).await?;
    let c = common::client();
    let url = format!("http://{addr}/v1/responses");
    let mut input = vec![json!({"type": "message", "role": "user", "content": "grow"})];
    let chunk = tether::agent::filler("large", 32_000);
    let mut body = Bytes::new();
    let mut step = 0usize;
    let mut at_size = Vec::new();
    while at_size.len() < samples {
        let req = json!({"model": "m", "input": input, "store": false, "metadata": {"emulator_script": "tools=1000,args=40"}});
        body = Bytes::from(req.to_string());
        let (status, _, _, resp) = common::post(&c, &url, body.clone()).await?;
        anyhow::ensure!(status == 200, "status {status}: {}", String::from_utf8_lossy(&resp));
        let resp: Value = serde_json::from_slice(&resp)?;
        let record = tap.next(Duration::from_secs(10)).await?;
        if body.len() >= target_bytes {
            at_size.push((record["prepare_ms"].as_f64().unwrap_or(0.0) * 1e3, record["plan"].clone()));
        }
        for item in resp["output"].as_array().cloned().unwrap_or_default() {
            if item["type"] == "function_call" {
                let output = if body.len() >= target_bytes { format!("ok {step}") } else { chunk.clone() };
                input.push(item.clone());
                input.push(
                    json!({"type": "function_call_output", "call_id": item["call_id"], "output": output}),
                );
            }
        }
        step += 1;
        anyhow::ensure!(step < 10_000, "conversation did not grow");
    }
    let mut parse = Vec::new();
    for _ in 0..samples.max(10) {
        let started = std::time::Instant::now();
        let v: Value = serde_json::from_slice(&body)?;
        parse.push(started.elapsed());
        drop(v);
    }
    let continued = at_size.iter().filter(|(_, p)| p == "continue").count();
    let mut prepare: Vec<Duration> =
        at_size.iter().map(|(us, _)| Duration::from_secs_f64(us / 1e6)).collect();
    Ok(json!({
        "body_bytes": body.len(), "samples": at_size.len(), "continued": continued,
        "added_p50_us_at_1mb": common::pct_us(&mut prepare, 50.0),
        "added_p99_us_at_1mb": common::pct_us(&mut prepare, 99.0),
        "parse_us_at_1mb": common::pct_us(&mut parse, 50.0),
    }))
}

//! `concurrency`: N streaming conversations at once through a tether child
//! process (so its memory is its own), several turns each.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tether::emulator::CostModel;

use crate::child::Child;
use crate::common;

pub async fn concurrency(conversations: usize, turns: usize) -> anyhow::Result<Value> {
    let (upstream, emu) = common::emulator(CostModel::zero(), true).await?;
    let limit = (conversations + 64).to_string();
    let env = [
        ("TETHER_POOL_PER_TENANT", limit.clone()),
        ("TETHER_POOL_TOTAL", limit.clone()),
        ("TETHER_SESSIONS_MAX", limit),
    ];
    let child = Child::start(&upstream, &env)?;
    let (pid, addr) = (child.pid, child.addr.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (idle_rss, _) = common::rss_mb(pid);
    let c = common::client();
    let url = format!("http://{addr}/v1/responses");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conversations {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move { conversation(&c, &url, i, turns).await }));
    }
    let (mut errors, mut sent) = (0usize, Vec::new());
    for t in tasks {
        match t.await? {
            Ok(mut s) => sent.append(&mut s),
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed();
    let (rss_after, peak) = common::rss_mb(pid);
    let contexts = emu.contexts();
    let mismatches = sent
        .iter()
        .filter(|(id, input)| {
            contexts
                .iter()
                .find(|c| &c.response_id == id)
                .is_none_or(|c| tether::emulator::oracle::same_context(input, &c.context).is_err())
        })
        .count();
    drop(child);
    let stats = emu.stats();
    Ok(json!({
        "conversations": conversations, "turns_each": turns, "errors": errors,
        "oracle_mismatches": mismatches, "continuations": stats.continuations,
        "ws_connections": stats.ws_connections,
        "idle_rss_mb": idle_rss, "rss_after_mb": rss_after, "peak_rss_mb": peak,
        "elapsed_ms": elapsed.as_secs_f64() * 1e3,
    }))
}

/// One conversation; returns (response id, input sent) per turn.
async fn conversation(
    c: &common::HttpClient,
    url: &str,
    i: usize,
    turns: usize,
) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
    let mut input = vec![
        json!({"type": "message", "role": "developer", "content": tether::agent::filler(&format!("sys{i}"), 2000)}),
        json!({"type": "message", "role": "user", "content": format!("task {i}")}),
    ];
    let mut sent = Vec::new();
    for _ in 0..turns {
        let body = json!({"model": "m", "input": input, "store": false, "stream": true,
                          "metadata": {"emulator_script": format!("tools={},answer=200", turns - 1)}});
        let (status, _, _, bytes) = common::post(c, url, Bytes::from(body.to_string())).await?;
        anyhow::ensure!(status == 200, "status {status}");
        let resp = tether::agent::completed_from_sse(&bytes)?;
        sent.push((resp["id"].as_str().unwrap_or_default().to_string(), input.clone()));
        for item in resp["output"].as_array().cloned().unwrap_or_default() {
            input.push(item.clone());
            if item["type"] == "function_call" {
                input.push(
                    json!({"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}),
                );
            }
        }
    }
    Ok(sent)
}

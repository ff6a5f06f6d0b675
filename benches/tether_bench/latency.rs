//! `overhead`, `stream` and `throughput`: what tether adds to a request,
//! against the same requests sent directly to the emulator (and through
//! nginx when it is installed), in the same run. tether runs as a child
//! process, as deployed (like nginx): its runtime does not share threads with
//! the emulator's and the load generator's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tether::emulator::CostModel;

use crate::child::Child;
use crate::common::{self, HttpClient};

async fn latencies(c: &HttpClient, url: &str, body: &Bytes, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, _, total, _) = common::post(c, url, body.clone()).await?;
        anyhow::ensure!(status == 200, "{url} answered {status}");
        out.push(total);
    }
    Ok(out)
}

/// Non-streaming agent turns (20 items, ~8 KB), concurrency 1.
pub async fn overhead(requests: usize) -> anyhow::Result<serde_json::Value> {
    let (upstream, _emu) = common::emulator(CostModel::zero(), false).await?;
    let tether = Child::start(&upstream, &[])?;
    let body = Bytes::from(common::agent_turn(20, 8_000, false, "tools=0,answer=200").to_string());
    let c = common::client();
    let direct_url = format!("{upstream}/responses");
    let tether_url = format!("http://{}/v1/responses", tether.addr);
    let warm = requests / 10 + 10;
    latencies(&c, &direct_url, &body, warm).await?;
    latencies(&c, &tether_url, &body, warm).await?;
    // Interleave blocks so drift on a shared machine hits both sides alike.
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        direct.extend(latencies(&c, &direct_url, &body, requests / 10).await?);
        through.extend(latencies(&c, &tether_url, &body, requests / 10).await?);
    }
    let p = |v: &mut Vec<Duration>, q| common::pct_us(v, q);
    let (d50, d99, t50, t99) =
        (p(&mut direct, 50.0), p(&mut direct, 99.0), p(&mut through, 50.0), p(&mut through, 99.0));
    let mut out = json!({
        "requests": direct.len(), "body_bytes": body.len(),
        "direct_p50_us": d50, "direct_p99_us": d99, "tether_p50_us": t50, "tether_p99_us": t99,
        "added_p50_us": t50 - d50, "added_p99_us": t99 - d99,
    });
    match crate::nginx::Nginx::start(&upstream) {
        Ok(Some(nginx)) => {
            let url = format!("{}/responses", nginx.base());
            latencies(&c, &url, &body, warm).await?;
            let mut via = Vec::new();
            for _ in 0..10 {
                via.extend(latencies(&c, &url, &body, requests / 10).await?);
            }
            out["nginx_p50_us"] = json!(p(&mut via, 50.0));
            out["nginx_p99_us"] = json!(p(&mut via, 99.0));
            out["nginx_added_p50_us"] = json!(p(&mut via, 50.0) - d50);
            out["nginx_added_p99_us"] = json!(p(&mut via, 99.0) - d99);
        }
        Ok(None) => out["nginx"] = json!("not installed"),
        Err(e) => out["nginx"] = json!(format!("failed to start: {e}")),
    }
    Ok(out)
}

/// Streaming turns with 64 deltas: added time to first event (unpaced, so
/// timer granularity does not blur it) and added gap between events (paced
/// 2 ms apart by the emulator). Two more references split the added time:
/// the emulator's own WebSocket path (a plain WebSocket client, no tether),
/// and tether's own share of each turn from its decision records (time to
/// the first event minus the upstream's).
pub async fn stream(turns: usize) -> anyhow::Result<serde_json::Value> {
    let (upstream, _emu) = common::emulator(CostModel::zero(), false).await?;
    let tether = Child::start(&upstream, &[])?;
    let unpaced = common::agent_turn(20, 8_000, true, "tools=0,answer=4096,delta=64");
    let mut paced = unpaced.clone();
    paced["metadata"]["emulator_fault"] = json!("slow=2");
    let ws_frame = {
        let mut frame = unpaced.clone();
        frame["type"] = json!("response.create");
        frame.as_object_mut().map(|m| m.remove("stream"));
        frame.to_string()
    };
    let (unpaced, paced) = (Bytes::from(unpaced.to_string()), Bytes::from(paced.to_string()));
    let c = common::client();
    let tap = crate::events::Tap::start(tether.socket_addr()?).await?;
    let mut sides = Vec::new();
    let mut own = Vec::new();
    let urls = [format!("{upstream}/responses"), format!("http://{}/v1/responses", tether.addr)];
    for (i, url) in urls.iter().enumerate() {
        let (mut ttfe, mut gaps) = (Vec::new(), Vec::new());
        stream_once(&c, url, unpaced.clone()).await?;
        for _ in 0..turns {
            ttfe.push(stream_once(&c, url, unpaced.clone()).await?.0);
        }
        if i == 1 {
            // tether's records: time before sending upstream, and upstream's
            // own time to first event, per turn.
            for _ in 0..=turns {
                let r = tap.next(Duration::from_secs(10)).await?;
                let ms = |k: &str| Duration::from_secs_f64(r[k].as_f64().unwrap_or(0.0) / 1e3);
                own.push((ms("prepare_ms"), ms("ttfe_ms")));
            }
        }
        for _ in 0..turns.div_ceil(10) {
            gaps.extend(stream_once(&c, url, paced.clone()).await?.1);
        }
        sides.push((ttfe, gaps));
    }
    let ws_url = format!("{}/responses", upstream.replacen("http", "ws", 1));
    let mut direct_ws = ws_ttfe(&ws_url, &ws_frame, turns).await?;
    let (mut dt, mut dg) = sides.remove(0);
    let (mut tt, mut tg) = sides.remove(0);
    let p = common::pct_us;
    own.remove(0);
    // tether's own share of each measured turn: its TTFE minus the upstream's.
    let mut share: Vec<Duration> = tt.iter().zip(&own).map(|(t, (_, up))| t.saturating_sub(*up)).collect();
    let (mut prep, mut up): (Vec<Duration>, Vec<Duration>) = own.into_iter().unzip();
    Ok(json!({
        "turns": turns, "paced_turns": turns.div_ceil(10), "events_per_turn": dg.len() / turns.div_ceil(10).max(1) + 1,
        "direct_ttfe_p50_us": p(&mut dt, 50.0), "direct_ttfe_p99_us": p(&mut dt, 99.0),
        "tether_ttfe_p50_us": p(&mut tt, 50.0), "tether_ttfe_p99_us": p(&mut tt, 99.0),
        "added_ttfe_p50_us": p(&mut tt, 50.0) - p(&mut dt, 50.0),
        "added_ttfe_p99_us": p(&mut tt, 99.0) - p(&mut dt, 99.0),
        "direct_ws_ttfe_p50_us": p(&mut direct_ws, 50.0), "direct_ws_ttfe_p99_us": p(&mut direct_ws, 99.0),
        "upstream_ws_ttfe_p50_us": p(&mut up, 50.0), "upstream_ws_ttfe_p99_us": p(&mut up, 99.0),
        "tether_share_p50_us": p(&mut share, 50.0), "tether_share_p99_us": p(&mut share, 99.0),
        "tether_prepare_p50_us": p(&mut prep, 50.0), "tether_prepare_p99_us": p(&mut prep, 99.0),
        "direct_gap_p99_us": p(&mut dg, 99.0), "tether_gap_p99_us": p(&mut tg, 99.0),
        "added_gap_p99_us": p(&mut tg, 99.0) - p(&mut dg, 99.0),
    }))
}

/// Time to the first event over the emulator's own WebSocket mode, no tether:
/// one socket, `turns` fresh `response.create`s, each read to its end.
async fn ws_ttfe(url: &str, frame: &str, turns: usize) -> anyhow::Result<Vec<Duration>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", "Bearer sk-bench".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let mut out = Vec::with_capacity(turns);
    for i in 0..=turns {
        let started = Instant::now();
        ws.send(Message::text(frame)).await?;
        let mut first = None;
        loop {
            let msg = ws.next().await.ok_or_else(|| anyhow::anyhow!("socket closed"))??;
            let Message::Text(text) = msg else { continue };
            first.get_or_insert_with(|| started.elapsed());
            if text.contains("\"response.completed\"") {
                break;
            }
            anyhow::ensure!(!text.contains("\"type\":\"error\""), "emulator error: {text}");
        }
        if i > 0 {
            out.push(first.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Time to the first SSE event and the gaps between later events.
async fn stream_once(c: &HttpClient, url: &str, body: Bytes) -> anyhow::Result<(Duration, Vec<Duration>)> {
    use http_body_util::BodyExt;
    let started = Instant::now();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(http_body_util::Full::new(body))?;
    let resp = c.request(req).await?;
    anyhow::ensure!(resp.status() == 200, "{url} answered {}", resp.status());
    let mut body = resp.into_body();
    let (mut first, mut last, mut gaps) = (None, None::<Instant>, Vec::new());
    while let Some(frame) = body.frame().await {
        if frame?.is_data() {
            let now = Instant::now();
            first.get_or_insert(now - started);
            if let Some(prev) = last {
                gaps.push(now - prev);
            }
            last = Some(now);
        }
    }
    Ok((first.unwrap_or_default(), gaps))
}

/// Closed-loop load at rising concurrency; the best rate with p99 < 10 ms.
pub async fn throughput(seconds: f64) -> anyhow::Result<serde_json::Value> {
    let (upstream, _emu) = common::emulator(CostModel::zero(), false).await?;
    let tether = Child::start(&upstream, &[])?;
    let body = Bytes::from(common::agent_turn(20, 8_000, false, "tools=0,answer=200").to_string());
    let mut out = json!({});
    let mut levels = Vec::new();
    let tether_url = format!("http://{}/v1/responses", tether.addr);
    for (name, url) in [("direct", format!("{upstream}/responses")), ("tether", tether_url)] {
        let mut best = 0.0f64;
        for conc in [1usize, 2, 4, 8, 16, 32] {
            let cpu_before = tether.cpu_us();
            let (rps, p99, n) = load(&url, &body, conc, Duration::from_secs_f64(seconds)).await?;
            // tether's CPU time per request (meaningful on the tether side only).
            let cpu = (name == "tether").then(|| ((tether.cpu_us() - cpu_before) / n.max(1) as f64).round());
            levels.push(json!({"side": name, "concurrency": conc, "rps": rps.round(), "p99_us": p99.round(),
                               "tether_cpu_us_per_request": cpu}));
            if p99 < 10_000.0 {
                best = best.max(rps);
            }
        }
        out[format!("{name}_rps")] = json!(best.round());
    }
    let (t, d) = (out["tether_rps"].as_f64().unwrap_or(0.0), out["direct_rps"].as_f64().unwrap_or(0.0));
    out["tether_rps_share"] = if d > 0.0 { json!((t / d * 1000.0).round() / 1000.0) } else { json!(null) };
    out["levels"] = json!(levels);
    Ok(out)
}

/// Returns requests/s, p99 in µs, and the number of requests.
async fn load(url: &str, body: &Bytes, conc: usize, dur: Duration) -> anyhow::Result<(f64, f64, usize)> {
    let stop = Arc::new(AtomicBool::new(false));
    let c = common::client();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, body, stop) = (c.clone(), url.to_string(), body.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, _, total, _) = common::post(&c, &url, body.clone()).await?;
                anyhow::ensure!(status == 200, "status {status}");
                lat.push(total);
            }
            Ok(lat)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rps, common::pct_us(&mut all, 99.0), all.len()))
}

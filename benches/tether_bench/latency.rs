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
use tether::emulator::WsMode;

use crate::child::Child;
use crate::common::{self, HttpClient};

/// One of the paths a measured request can take.
enum Path<'a> {
    Http(&'a HttpClient, String),
    Ws(&'a mut WsTurns),
}

impl Path<'_> {
    async fn once(&mut self, body: &Bytes) -> anyhow::Result<Duration> {
        match self {
            Path::Http(c, url) => {
                let (status, _, total, _) = common::post(c, url, body.clone()).await?;
                anyhow::ensure!(status == 200, "{url} answered {status}");
                Ok(total)
            }
            Path::Ws(ws) => Ok(ws.turn().await?.1),
        }
    }
}

/// Non-streaming agent turns (20 items, ~8 KB), concurrency 1, through each
/// path in turn: directly to the emulator over HTTP (the reference), directly
/// over its WebSocket mode (what the upstream leg costs without tether),
/// through tether, through a second tether whose WebSocket upgrades go to an
/// emulator that refuses them (so it serves every turn over its HTTP
/// fallback, to the first emulator: tether as a plain proxy, the floor under
/// its managed path), through a bare hyper reverse
/// proxy (`floor`: the floor under any hyper/tokio proxy) and through nginx
/// when it is installed. The paths take turns request by request, in a rotating order,
/// so the drift and noise of a shared machine fall on all of them alike.
pub async fn overhead(requests: usize) -> anyhow::Result<serde_json::Value> {
    let (upstream, _emu) = common::timing_upstream(WsMode::Enabled).await?;
    let tether = Child::start(&upstream, &[])?;
    // tether as a plain proxy: its upgrades go to an emulator that refuses
    // them, its HTTP requests to the same emulator as the direct ones (the
    // added time is then measured against the upstream it used).
    let (refusing, _emu_http) = common::timing_upstream(WsMode::Refuse426).await?;
    let refused_ws = ("TETHER_UPSTREAM_WS_URL", ws_url(&refusing));
    let tether_http = Child::start(&upstream, &[refused_ws])?;
    let floor = Child::floor(&upstream)?;
    let turn = common::agent_turn(20, 8_000, false, "tools=0,answer=200");
    let body = Bytes::from(turn.to_string());
    let c = common::client();
    let mut ws = WsTurns::open(&ws_url(&upstream), ws_frame(&turn)).await?;
    let nginx = crate::nginx::Nginx::start(&upstream);
    let mut names = vec!["direct", "direct_ws", "tether", "tether_http", "floor"];
    let mut paths = vec![
        Path::Http(&c, format!("{upstream}/responses")),
        Path::Ws(&mut ws),
        Path::Http(&c, tether.responses_url()),
        Path::Http(&c, tether_http.responses_url()),
        Path::Http(&c, floor.responses_url()),
    ];
    if let Ok(Some(n)) = &nginx {
        names.push("nginx");
        paths.push(Path::Http(&c, format!("{}/responses", n.base())));
    }
    let warm = requests / 10 + 10;
    let mut lat: Vec<Vec<Duration>> = vec![Vec::with_capacity(requests); paths.len()];
    // CPU and context switches of the proxies over the measured requests.
    let pids: Vec<(&str, u32)> =
        [("tether", tether.pid), ("tether_http", tether_http.pid), ("floor", floor.pid)]
            .into_iter()
            .chain(nginx.as_ref().ok().and_then(Option::as_ref).map(|n| ("nginx", n.pid())))
            .collect();
    let mut before = Vec::new();
    for i in 0..warm + requests {
        if i == warm {
            before = pids.iter().map(|(_, pid)| crate::child::usage(*pid)).collect();
        }
        for k in 0..paths.len() {
            let j = (i + k) % paths.len();
            let t = paths[j].once(&body).await?;
            if i >= warm {
                lat[j].push(t);
            }
        }
    }
    let mut out =
        json!({"requests": requests, "body_bytes": body.len(), "emulator": common::placement().name()});
    for ((name, pid), before) in pids.iter().zip(before) {
        let (cpu, switches) = crate::child::usage(*pid).per(before, requests);
        out[format!("{name}_cpu_us_per_request")] = json!(cpu.round());
        out[format!("{name}_switches_per_request")] = json!(switches);
    }
    // Upstream sockets tether opened for these identical (so fresh) turns:
    // each supersedes the one before, whose socket it can then reuse.
    // (Asked after the CPU was read, so the scrape is not counted in it.)
    let opened = tether.metrics(&c).await?.get("tether_upstream_sockets_opened");
    out["tether_sockets_opened"] = json!(opened);
    let mut pct = std::collections::HashMap::new();
    for (name, v) in names.iter().zip(lat.iter_mut()) {
        for q in [50, 99] {
            let us = common::pct_us(v, q as f64);
            out[format!("{name}_p{q}_us")] = json!(us);
            pct.insert((*name, q), us);
        }
    }
    let sides = [
        ("tether", "added"),
        ("tether_http", "tether_http_added"),
        ("floor", "floor_added"),
        ("nginx", "nginx_added"),
    ];
    for (side, key) in sides {
        for q in [50, 99] {
            if let (Some(via), Some(direct)) = (pct.get(&(side, q)), pct.get(&("direct", q))) {
                out[format!("{key}_p{q}_us")] = json!(via - direct);
            }
        }
    }
    match nginx {
        Ok(Some(_)) => {}
        Ok(None) => out["nginx"] = json!("not installed"),
        Err(e) => out["nginx"] = json!(format!("failed to start: {e}")),
    }
    Ok(out)
}

/// Streaming turns with 64 deltas: added time to first event and added gap
/// between events. Time to first event is measured on turns streamed as the
/// service streams them (the head events at once, the deltas after a 2 ms
/// time to first token: `added_ttfe_*`), and again on turns whose 72
/// events all come at once (`unpaced_added_ttfe_*`: the burst of deltas
/// then competes for the two cores with the first event's delivery; the
/// only definition before 2026-12-02 17:50); the gap between events on
/// turns the emulator paces 2 ms apart. Two more references split the added time:
/// the emulator's own WebSocket path (a plain WebSocket client, no tether),
/// and tether's own share of each turn from its decision records (time to
/// the first event minus the upstream's). As in `overhead`, the paths take
/// turns request by request, in a rotating order, so the drift and noise of
/// a shared machine fall on all of them alike.
pub async fn stream(turns: usize) -> anyhow::Result<serde_json::Value> {
    let (upstream, _emu) = common::timing_upstream(WsMode::Enabled).await?;
    let tether = Child::start(&upstream, &[])?;
    let warm = turns.min(80);
    let unpaced = common::agent_turn(20, 8_000, true, "tools=0,answer=4096,delta=64");
    // As the service streams: the head events at once, the deltas after a
    // time to first token (2 ms: one or two of the emulator's timer ticks).
    let mut headed = unpaced.clone();
    headed["metadata"]["emulator_fault"] = json!(format!("first_token={FIRST_TOKEN_MS}"));
    let mut paced = unpaced.clone();
    paced["metadata"]["emulator_fault"] = json!("slow=2");
    let frames = [ws_frame(&headed), ws_frame(&unpaced)];
    let [headed, unpaced, paced] = [headed, unpaced, paced].map(|v| Bytes::from(v.to_string()));
    let c = common::client();
    let tap = crate::events::Tap::start(tether.socket_addr()?).await?;
    let [direct, via] = [format!("{upstream}/responses"), tether.responses_url()];
    // Every turn here is a new conversation to tether (the same request
    // again, without the last answer), which supersedes the one before: it
    // reuses that one's socket once its spare is taken (until 9152ce7 it
    // opened sockets up to `pool.per_tenant`, 64). Warm up so measured
    // turns meet the pool at rest.
    for _ in 0..warm {
        stream_once(&c, &direct, unpaced.clone()).await?;
        stream_once(&c, &via, unpaced.clone()).await?;
    }
    // tether's CPU and context switches over the measured turns (65 events each).
    let before = crate::child::usage(tether.pid);
    // Time to first event: the three paths take turns, request by request,
    // first on turns whose tokens follow a time to first token, then on
    // turns whose events all come at once.
    let mut ttfe = Vec::new();
    for (body, frame) in [headed, unpaced].into_iter().zip(frames) {
        let mut ws = WsTurns::open(&ws_url(&upstream), frame).await?;
        ws.turn().await?;
        let mut t = Ttfe::with_capacity(turns);
        for i in 0..turns {
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => t.direct.push(stream_once(&c, &direct, body.clone()).await?.0),
                    1 => t.tether.push(stream_once(&c, &via, body.clone()).await?.0),
                    _ => t.direct_ws.push(ws.turn().await?.0),
                }
            }
        }
        ttfe.push(t);
    }
    let (cpu, switches) = crate::child::usage(tether.pid).per(before, 2 * turns);
    // tether's records of its warm-up and measured turns, in order: time
    // before sending upstream, and the upstream's own time to first event.
    let mut own = Vec::with_capacity(warm + 2 * turns);
    for _ in 0..warm + 2 * turns {
        let r = tap.next(Duration::from_secs(10)).await?;
        let ms = |k: &str| Duration::from_secs_f64(r[k].as_f64().unwrap_or(0.0) / 1e3);
        own.push((ms("prepare_ms"), ms("ttfe_ms")));
    }
    own.drain(..warm);
    let (mut dg, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..turns.div_ceil(10) {
        dg.extend(stream_once(&c, &direct, paced.clone()).await?.1);
        tg.extend(stream_once(&c, &via, paced.clone()).await?.1);
    }
    let p = common::pct_us;
    let mut out = json!({
        "emulator": common::placement().name(),
        "turns": turns, "warm_up_turns": warm, "first_token_ms": FIRST_TOKEN_MS,
        "paced_turns": turns.div_ceil(10), "events_per_turn": dg.len() / turns.div_ceil(10).max(1) + 1,
        "direct_gap_p99_us": p(&mut dg, 99.0), "tether_gap_p99_us": p(&mut tg, 99.0),
        "added_gap_p99_us": p(&mut tg, 99.0) - p(&mut dg, 99.0),
        "tether_cpu_us_per_turn": cpu.round(), "tether_switches_per_turn": switches,
    });
    let unpaced_own = own.split_off(turns.min(own.len()));
    for ((t, own), prefix) in ttfe.iter_mut().zip([own, unpaced_own]).zip(["", "unpaced_"]) {
        for (k, v) in t.figures(own) {
            out[format!("{prefix}{k}")] = v;
        }
    }
    Ok(out)
}

/// The time to first token of the turns `stream` measures its time to first
/// event on (`first_token=MS`: the emulator sends the head events at once).
const FIRST_TOKEN_MS: u64 = 2;

/// One set of `stream`'s time-to-first-event turns, per path.
struct Ttfe {
    direct: Vec<Duration>,
    tether: Vec<Duration>,
    direct_ws: Vec<Duration>,
}

impl Ttfe {
    fn with_capacity(n: usize) -> Ttfe {
        Ttfe {
            direct: Vec::with_capacity(n),
            tether: Vec::with_capacity(n),
            direct_ws: Vec::with_capacity(n),
        }
    }

    /// The set's figures; `own` is tether's (prepare, upstream TTFE) for each
    /// of its turns, in order.
    fn figures(&mut self, own: Vec<(Duration, Duration)>) -> Vec<(&'static str, serde_json::Value)> {
        let p = common::pct_us;
        // tether's own share of each turn: its TTFE minus the upstream's.
        let mut share: Vec<Duration> =
            self.tether.iter().zip(&own).map(|(t, (_, up))| t.saturating_sub(*up)).collect();
        let (mut prep, mut up): (Vec<Duration>, Vec<Duration>) = own.into_iter().unzip();
        let (d, t, w) = (&mut self.direct, &mut self.tether, &mut self.direct_ws);
        vec![
            ("direct_ttfe_p50_us", json!(p(d, 50.0))),
            ("direct_ttfe_p99_us", json!(p(d, 99.0))),
            ("tether_ttfe_p50_us", json!(p(t, 50.0))),
            ("tether_ttfe_p99_us", json!(p(t, 99.0))),
            ("added_ttfe_p50_us", json!(p(t, 50.0) - p(d, 50.0))),
            ("added_ttfe_p99_us", json!(p(t, 99.0) - p(d, 99.0))),
            ("direct_ws_ttfe_p50_us", json!(p(w, 50.0))),
            ("direct_ws_ttfe_p99_us", json!(p(w, 99.0))),
            ("upstream_ws_ttfe_p50_us", json!(p(&mut up, 50.0))),
            ("upstream_ws_ttfe_p99_us", json!(p(&mut up, 99.0))),
            ("tether_share_p50_us", json!(p(&mut share, 50.0))),
            ("tether_share_p99_us", json!(p(&mut share, 99.0))),
            ("tether_prepare_p50_us", json!(p(&mut prep, 50.0))),
            ("tether_prepare_p99_us", json!(p(&mut prep, 99.0))),
        ]
    }
}

/// Turns over the emulator's own WebSocket mode, no tether: one socket,
/// one fresh `response.create` after another, each read to its end.
struct WsTurns {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    frame: String,
}

impl WsTurns {
    async fn open(url: &str, frame: String) -> anyhow::Result<WsTurns> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("authorization", "Bearer sk-bench".parse()?);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
        Ok(WsTurns { ws, frame })
    }

    /// One turn: its time to the first event and to the terminal event.
    async fn turn(&mut self) -> anyhow::Result<(Duration, Duration)> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let started = Instant::now();
        self.ws.send(Message::text(self.frame.as_str())).await?;
        let mut first = None;
        loop {
            let msg = self.ws.next().await.ok_or_else(|| anyhow::anyhow!("socket closed"))??;
            let Message::Text(text) = msg else { continue };
            first.get_or_insert_with(|| started.elapsed());
            if text.contains("\"response.completed\"") {
                return Ok((first.unwrap_or_default(), started.elapsed()));
            }
            anyhow::ensure!(!text.contains("\"type\":\"error\""), "emulator error: {text}");
        }
    }
}

/// `body` as a WebSocket `response.create` frame.
fn ws_frame(body: &serde_json::Value) -> String {
    let mut frame = body.clone();
    frame["type"] = json!("response.create");
    frame.as_object_mut().map(|m| m.remove("stream"));
    frame.to_string()
}

fn ws_url(upstream: &str) -> String {
    format!("{}/responses", upstream.replacen("http", "ws", 1))
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
/// Every level also notes the CPU time per request of this process (the
/// load generator, and the emulator when it runs inside), of the emulator
/// when it has a process of its own, and of tether: on a shared machine the
/// ratio of the rates is the ratio of what a request costs all processes.
pub async fn throughput(seconds: f64, only: Side) -> anyhow::Result<serde_json::Value> {
    let (upstream, emu) = common::timing_upstream(WsMode::Enabled).await?;
    let tether = Child::start(&upstream, &[])?;
    let body = Bytes::from(common::agent_turn(20, 8_000, false, "tools=0,answer=200").to_string());
    let mut out = json!({"emulator": common::placement().name()});
    let mut levels = Vec::new();
    let sides = [("direct", format!("{upstream}/responses")), ("tether", tether.responses_url())];
    // Per side: the best rate, and the level that reached it.
    let mut best: [(f64, serde_json::Value); 2] = [(0.0, json!(null)), (0.0, json!(null))];
    // The sides take turns level by level (each going first at every other
    // level), so the machine's drift during the run falls on both alike;
    // one block of levels per side put it all into the ratio.
    for (step, conc) in [1usize, 2, 4, 8, 16, 32].into_iter().enumerate() {
        for k in [step % 2, 1 - step % 2] {
            let (name, url) = &sides[k];
            if !only.includes(name) {
                continue;
            }
            let (tether_before, own_before) = (tether.cpu_us(), crate::child::own_usage());
            let emu_before = emu.pid().map(crate::child::usage);
            let (rps, p99, n) = load(url, &body, conc, Duration::from_secs_f64(seconds)).await?;
            let (own, _) = crate::child::own_usage().per(own_before, n);
            // tether's CPU time per request (meaningful on the tether side only).
            let cpu =
                (*name == "tether").then(|| ((tether.cpu_us() - tether_before) / n.max(1) as f64).round());
            // The emulator's, when it has a process of its own (else it is in the bench's).
            let emu_cpu =
                emu.pid().zip(emu_before).map(|(pid, b)| crate::child::usage(pid).per(b, n).0.round());
            let level = json!({"side": name, "concurrency": conc, "rps": rps.round(), "p99_us": p99.round(),
                               "tether_cpu_us_per_request": cpu, "bench_cpu_us_per_request": own.round(),
                               "emulator_cpu_us_per_request": emu_cpu});
            levels.push(level.clone());
            if p99 < 10_000.0 && rps > best[k].0 {
                best[k] = (rps, level);
            }
        }
    }
    // A side not loaded has no figures (and the share is not judged).
    for (k, (name, _)) in sides.iter().enumerate().filter(|(_, (name, _))| only.includes(name)) {
        out[format!("{name}_rps")] = json!(best[k].0.round());
        out[format!("{name}_best_level")] = best[k].1.clone();
    }
    let (t, d) = (best[1].0, best[0].0);
    out["tether_rps_share"] = if d > 0.0 { json!((t / d * 1000.0).round() / 1000.0) } else { json!(null) };
    out["levels"] = json!(levels);
    Ok(out)
}

/// Which sides `throughput` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    Both,
    Direct,
    Tether,
}

impl Side {
    fn includes(self, name: &str) -> bool {
        match self {
            Side::Both => true,
            Side::Direct => name == "direct",
            Side::Tether => name == "tether",
        }
    }
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

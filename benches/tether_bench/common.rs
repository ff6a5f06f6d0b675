//! Shared pieces: starting the emulator and tether, a keep-alive client,
//! percentiles, and writing results.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tether::config::Config;
use tether::emulator::{self, CostModel, EmulatorConfig, EmulatorHandle};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build(c)
}

pub async fn emulator(cost: CostModel, record: bool) -> anyhow::Result<(String, EmulatorHandle)> {
    emulator_with(EmulatorConfig { cost, record_contexts: record, ..EmulatorConfig::default() }).await
}

/// An emulator on `config` (its `listen` replaced by 127.0.0.1, port 0); returns its base URL.
pub async fn emulator_with(config: EmulatorConfig) -> anyhow::Result<(String, EmulatorHandle)> {
    let (addr, handle) =
        emulator::spawn(EmulatorConfig { listen: ([127, 0, 0, 1], 0).into(), ..config }).await?;
    Ok((format!("http://{addr}/v1"), handle))
}

/// Where the timing scenarios (`overhead`, `stream`, `throughput`) run
/// their upstream emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Placement {
    /// `tether emulate`, a process of its own: every path to the upstream
    /// (direct, through tether, nginx or the floor) crosses processes, as it
    /// would to a remote service.
    #[default]
    Process,
    /// Inside `tether-bench`, on the load generator's runtime (the harness
    /// of every figure before 2026-12-02 15:40): a direct request never
    /// leaves this process.
    InProcess,
}

impl Placement {
    /// Its name in the JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Process => "process",
            Placement::InProcess => "in-process",
        }
    }
}

/// Where [`timing_upstream`] puts the emulator (`--emulator`), and the
/// tether binary whose `emulate` it runs in a process (`--emulator-bin`;
/// `None`: the one next to this binary), as `main` chose them.
static EMULATOR: std::sync::Mutex<(Placement, Option<PathBuf>)> =
    std::sync::Mutex::new((Placement::Process, None));

/// Sets where [`timing_upstream`] puts the emulator, and whose it runs (e.g.
/// the plain release build's, to measure a profile-guided tether against the
/// same upstream as the plain one).
pub fn place_emulator(p: Placement, bin: Option<PathBuf>) {
    *EMULATOR.lock().unwrap_or_else(|e| e.into_inner()) = (p, bin);
}

/// Where [`timing_upstream`] puts the emulator.
pub fn placement() -> Placement {
    EMULATOR.lock().unwrap_or_else(|e| e.into_inner()).0
}

/// A running emulator, stopped on drop, wherever it runs.
pub enum Upstream {
    /// Held for its drop, which stops the emulator.
    InProcess {
        _running: EmulatorHandle,
    },
    Process(crate::child::Child),
}

impl Upstream {
    /// Its process id when it has its own (its CPU time is then its own).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Upstream::InProcess { .. } => None,
            Upstream::Process(c) => Some(c.pid),
        }
    }
}

/// The zero-cost emulator of a timing scenario, placed as `--emulator`
/// says, answering WebSocket upgrades as `ws` says; returns its base URL.
pub async fn timing_upstream(ws: emulator::WsMode) -> anyhow::Result<(String, Upstream)> {
    let (placement, bin) = EMULATOR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(match placement {
        Placement::Process => {
            let child = crate::child::Child::emulator(ws, bin.as_deref())?;
            (child.base_url(), Upstream::Process(child))
        }
        Placement::InProcess => {
            let (url, handle) =
                emulator_with(EmulatorConfig { cost: CostModel::zero(), ws, ..EmulatorConfig::default() })
                    .await?;
            (url, Upstream::InProcess { _running: handle })
        }
    })
}

/// tether in-process in front of `upstream`; returns its address.
pub async fn tether(upstream: &str, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<SocketAddr> {
    let mut config = Config::default();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.upstream.base_url = upstream.to_string();
    config.upstream.ws_url = String::new();
    config.upstream.api_key_env = "TETHER_BENCH_NO_KEY".into();
    config.log.level = "warn".into();
    tweak(&mut config);
    let config = config.with_derived();
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(tether::serve(config, listener, std::future::pending()));
    Ok(addr)
}

/// One POST; returns status, time to the first body byte, total time, body.
pub async fn post(
    c: &HttpClient,
    url: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Duration, Duration, Bytes)> {
    let started = Instant::now();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(Full::new(body))?;
    let resp = c.request(req).await.context("request")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            first.get_or_insert_with(|| started.elapsed());
            out.extend_from_slice(&data);
        }
    }
    let total = started.elapsed();
    Ok((status, first.unwrap_or(total), total, Bytes::from(out)))
}

/// A realistic agent turn: `items` items, about `bytes` of JSON, no tool calls left.
pub fn agent_turn(items: usize, bytes: usize, stream: bool, script: &str) -> Value {
    let per = bytes / items.max(1);
    let mut input = vec![json!({"type": "message", "role": "developer",
        "content": [{"type": "input_text", "text": tether::agent::filler("bench-sys", per)}]})];
    let mut i = 0;
    while input.len() + 2 <= items {
        let call_id = format!("call_{i}");
        input.push(json!({"type": "function_call", "call_id": call_id, "name": "exec_command",
            "arguments": format!("{{\"cmd\":\"ls {i}\"}}")}));
        input.push(json!({"type": "function_call_output", "call_id": call_id,
            "output": tether::agent::filler(&format!("out-{i}"), per.saturating_sub(60))}));
        i += 1;
    }
    input.push(json!({"type": "message", "role": "user", "content": "summarise"}));
    // Pad the developer message so the whole body is about `bytes`.
    let have = serde_json::to_string(&input).map_or(0, |s| s.len());
    if let Some(text) = input[0]["content"][0]["text"].as_str() {
        let padded = format!("{text} {}", tether::agent::filler("pad", bytes.saturating_sub(have + 200)));
        input[0]["content"][0]["text"] = json!(padded);
    }
    json!({"model": "gpt-emulated", "input": input, "store": false, "stream": stream,
           "metadata": {"emulator_script": script}})
}

/// The p-th percentile (0..=100) in microseconds.
pub fn pct_us(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx.min(samples.len() - 1)].as_secs_f64() * 1e6
}

/// Prints a two-column table and writes `json` to `path` when given.
pub fn report(title: &str, json: &Value, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!("\n{title}");
    print_fields(json, "  ");
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(json)?)?;
    }
    Ok(())
}

/// One line per field; a nested object's fields indented below its name.
fn print_fields(json: &Value, indent: &str) {
    let Some(map) = json.as_object() else { return };
    for (k, v) in map {
        match v {
            Value::Object(_) => {
                println!("{indent}{k}");
                print_fields(v, &format!("{indent}  "));
            }
            _ => println!("{indent}{k:<28} {}", readable(v)),
        }
    }
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// A figure as a reader wants it: whole numbers from 10 up, three decimals below.
pub fn readable(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() && x.abs() >= 10.0 => format!("{x:.0}"),
        Some(x) if v.is_f64() => format!("{x:.3}"),
        _ => v.to_string(),
    }
}

/// Resident memory of a process (VmRSS, VmHWM) in MB, from /proc.
pub fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}

//! `tether demo`: the same scripted agent loop run twice against the built-in
//! emulator (illustrative cost model), once directly over HTTP and once
//! through an in-process tether, with a per-turn table and a summary of what
//! tether saved. Runs offline; the times come from the emulator's cost model.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::agent::{self, LoopReport, LoopSpec, TurnReport};
use crate::config::Config;
use crate::emulator::{self, EmulatorConfig, EmulatorHandle};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Tool calls in the loop (turns = tool_calls + 1).
    pub tool_calls: usize,
    /// Emulator cost profile name (`illustrative` or `zero`).
    pub profile: String,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { tool_calls: 29, profile: "illustrative".into() }
    }
}

/// One side of the comparison.
struct Side {
    report: LoopReport,
    upstream_bytes: Vec<u64>,
    total_upstream_bytes: u64,
    mismatches: usize,
}

/// Runs the demo, writing the report to `out`.
pub async fn run(opts: &DemoOptions, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let cost = emulator::profile(&opts.profile)
        .ok_or_else(|| anyhow::anyhow!("unknown profile {:?} (zero, illustrative)", opts.profile))?;
    let (emu_addr, emu) = emulator::spawn(EmulatorConfig { cost, ..EmulatorConfig::default() }).await?;
    let spec = LoopSpec { tool_calls: opts.tool_calls, ..LoopSpec::default() };
    writeln!(
        out,
        "tether demo: a {}-turn agent loop (~{} KB system prompt, ~{} KB tool outputs), \n\
         emulator profile `{}`, run directly over HTTP and then through tether.\n",
        spec.tool_calls + 1,
        spec.system_prompt_bytes / 1000,
        spec.tool_output_bytes / 1000,
        opts.profile
    )?;
    let direct_base = format!("http://{emu_addr}/v1");
    let direct = run_side(&direct_base, &spec, &emu).await?;

    let mut config = Config::default();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.upstream.base_url = direct_base.clone();
    config.upstream.ws_url = String::new();
    config.upstream.api_key_env = "TETHER_DEMO_NO_KEY".into();
    let config = config.with_derived();
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(config, listener, async move {
        let _ = stop_rx.await;
    }));
    emu.reset();
    let through = run_side(&format!("http://{addr}/v1"), &spec, &emu).await?;
    let _ = stop_tx.send(());
    let _ = server.await;
    emu.shutdown();

    print_table(out, &direct, &through)?;
    print_summary(out, &direct, &through)?;
    Ok(())
}

async fn run_side(base: &str, spec: &LoopSpec, emu: &EmulatorHandle) -> anyhow::Result<Side> {
    let per_turn = Arc::new(Mutex::new(Vec::new()));
    let mut last = emu.stats().bytes_received;
    let sink = per_turn.clone();
    let emu2 = emu.clone();
    let mut on_turn = move |_: &TurnReport| {
        let now = emu2.stats().bytes_received;
        if let Ok(mut v) = sink.lock() {
            v.push(now - last);
        }
        last = now;
    };
    let report = agent::run_with(base, spec, &mut on_turn).await?;
    let upstream_bytes = per_turn.lock().map(|v| v.clone()).unwrap_or_default();
    let mismatches = oracle_mismatches(emu, &report);
    Ok(Side { total_upstream_bytes: upstream_bytes.iter().sum(), upstream_bytes, report, mismatches })
}

/// Contexts the emulator reconstructed that differ from what the client sent.
pub fn oracle_mismatches(emu: &EmulatorHandle, report: &LoopReport) -> usize {
    let contexts = emu.contexts();
    report
        .turns
        .iter()
        .filter(|t| {
            let found = contexts.iter().find(|c| c.response_id == t.response_id);
            found.is_none_or(|c| emulator::oracle::same_context(&t.input, &c.context).is_err())
        })
        .count()
}

fn print_table(out: &mut (dyn Write + Send), direct: &Side, through: &Side) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>4}  {:>5}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}  {:>9}  {:>9}  route",
        "turn", "items", "direct B", "tether B", "items up", "cached d", "cached t", "direct ms", "tether ms"
    )?;
    for (i, (d, t)) in direct.report.turns.iter().zip(&through.report.turns).enumerate() {
        let items_up = if t.route.as_deref() == Some("continue") { t.new_items } else { t.items };
        writeln!(
            out,
            "{:>4}  {:>5}  {:>9}  {:>9}  {:>8}  {:>7.0}%  {:>7.0}%  {:>9.0}  {:>9.0}  {}",
            i + 1,
            t.items,
            direct.upstream_bytes.get(i).copied().unwrap_or(0),
            through.upstream_bytes.get(i).copied().unwrap_or(0),
            items_up,
            pct(d.cached_tokens, d.input_tokens),
            pct(t.cached_tokens, t.input_tokens),
            d.elapsed.as_secs_f64() * 1e3,
            t.elapsed.as_secs_f64() * 1e3,
            t.route.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

fn print_summary(out: &mut (dyn Write + Send), direct: &Side, through: &Side) -> std::io::Result<()> {
    let ms = |s: &Side| s.report.turns.iter().map(|t| t.elapsed.as_secs_f64() * 1e3).sum::<f64>();
    let cached = |s: &Side| {
        let turns = &s.report.turns[1.min(s.report.turns.len())..];
        pct(turns.iter().map(|t| t.cached_tokens).sum(), turns.iter().map(|t| t.input_tokens).sum())
    };
    let continued = through.report.turns.iter().filter(|t| t.route.as_deref() == Some("continue")).count();
    let (d_ms, t_ms) = (ms(direct), ms(through));
    writeln!(out)?;
    writeln!(out, "summary                         direct HTTP     through tether")?;
    writeln!(
        out,
        "  upstream bytes (whole frames) {:>12}   {:>12}   ({:.1}% of direct)",
        direct.total_upstream_bytes,
        through.total_upstream_bytes,
        pct(through.total_upstream_bytes, direct.total_upstream_bytes)
    )?;
    writeln!(out, "  cached input tokens, turns 2+ {:>11.1}%   {:>11.1}%", cached(direct), cached(through))?;
    writeln!(
        out,
        "  modeled time                  {:>10.0}ms   {:>10.0}ms   ({:.0}% faster)",
        d_ms,
        t_ms,
        100.0 * (1.0 - t_ms / d_ms.max(1e-9))
    )?;
    writeln!(
        out,
        "  turns continued as deltas     {:>12}   {:>12}",
        "-",
        format!("{continued}/{}", through.report.turns.len())
    )?;
    writeln!(out, "  oracle: contexts that differ  {:>12}   {:>12}", direct.mismatches, through.mismatches)?;
    writeln!(
        out,
        "  final answers equal           {:>12}",
        direct.report.final_text == through.report.final_text
    )?;
    writeln!(
        out,
        "\nTimes are the emulator's cost model (handshake, per-request latency, upload, prefill of uncached\n\
         tokens, decode), not measurements of the real service. Bytes and cached tokens are counted by the\n\
         emulator from what it actually received and held."
    )?;
    Ok(())
}

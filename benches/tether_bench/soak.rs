//! `soak`: many conversations for a long time through a tether child process,
//! with random upstream faults, client hang-ups, edited histories and churn
//! (a small session store, a small socket pool, short timeouts, several
//! tenants, upstream connections that age out).
//!
//! It passes when no answer is bad (every one is a response or a clean error
//! in the API's shape, and errors only where a fault was injected), no request
//! outlives its deadline, the oracle finds every context the upstream rebuilt
//! equal to what the client sent, tether's RSS stays bounded ([`RSS_RULE`]),
//! and once the load stops tether goes back to idle: no request in flight, no
//! socket open, a clean exit on SIGTERM.

mod conversation;
mod oracle;
mod verdict;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether::emulator::{self, CostModel, EmulatorConfig};

use crate::child::{Child, Metrics};
use crate::common;
use conversation::{Ctx, Tally};

/// Conversations pick one of this many API keys (tenants).
const TENANTS: usize = 8;
/// tether's session store: small, so LRU eviction runs all the time.
const SESSIONS_MAX: usize = 2_000;
/// Every this many seconds the emulator refuses the next WebSocket upgrade
/// (426): tether serves the next `FALLBACK_COOLDOWN` over plain HTTP, then
/// goes back to WebSocket mode, so the fallback and both switches run all along.
const REFUSE_EVERY: u64 = 5;
const FALLBACK_COOLDOWN: &str = "1s";
/// A request not answered in full by then counts as hung.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a checked request's expected context is kept for late oracle records.
const ORACLE_KEEP: Duration = Duration::from_secs(60);
/// The bound on tether's memory, as stated in the output and BENCHMARKS.md.
pub const RSS_RULE: &str = "bounded: max RSS over the last window <= 1.25 x max RSS over the first (warm-up) window + 10 MB; \
     window = a quarter of the run, at most 60 s";

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    /// How long load runs.
    pub duration: Duration,
    /// Conversation workers (each runs one conversation at a time).
    pub concurrency: usize,
    /// Share of requests that carry an emulator fault.
    pub fault_rate: f64,
    /// Seeds every worker's choices.
    pub seed: u64,
}

impl SoakOpts {
    /// The `--quick` variant: ~15 s of load at lower concurrency.
    pub fn quick(mut self) -> Self {
        self.duration = self.duration.min(Duration::from_secs(15));
        self.concurrency = self.concurrency.min(16);
        self
    }
}

/// tether's configuration for the run (environment overrides): churn everywhere.
fn tether_env(quick: bool) -> Vec<(&'static str, String)> {
    vec![
        ("TETHER_SESSIONS_MAX", SESSIONS_MAX.to_string()),
        ("TETHER_SESSIONS_TTL", if quick { "5s" } else { "2m" }.into()),
        ("TETHER_POOL_PER_TENANT", "16".into()),
        ("TETHER_POOL_TOTAL", "96".into()),
        ("TETHER_POOL_IDLE_TIMEOUT", "3s".into()),
        ("TETHER_POOL_PING_INTERVAL", "1s".into()),
        ("TETHER_POOL_PONG_TIMEOUT", "3s".into()),
        // Longer than the emulator's connection age limit: the upstream's
        // `websocket_connection_limit_reached` comes first, and is recovered from.
        ("TETHER_POOL_MAX_AGE", if quick { "10s" } else { "45s" }.into()),
        ("TETHER_POOL_DRAIN_TIMEOUT", "10s".into()),
        ("TETHER_POOL_QUEUE_TIMEOUT", "2s".into()),
        ("TETHER_UPSTREAM_FALLBACK_COOLDOWN", FALLBACK_COOLDOWN.into()),
    ]
}

/// Runs the soak and returns its report (`passed` says whether it held).
pub async fn soak(opts: SoakOpts, quick: bool) -> anyhow::Result<Value> {
    let config = EmulatorConfig {
        cost: CostModel::zero(),
        record_contexts: true,
        // Upstream connections age out too (websocket_connection_limit_reached).
        max_connection_age: Duration::from_secs(if quick { 5 } else { 30 }),
        ping_interval: Some(Duration::from_secs(5)),
        ..EmulatorConfig::default()
    };
    let (addr, emu) = emulator::spawn(config).await?;
    let upstream = format!("http://{addr}/v1");
    let env = tether_env(quick);
    let child = Child::start(&upstream, &env)?;
    // Scrapes use a client of their own (one keep-alive connection, part
    // of the baseline); the load's client is dropped before the idle checks.
    let client = common::client();
    let baseline = child.metrics(&client).await?;
    let ctx = Arc::new(Ctx::new(
        emu.clone(),
        common::client(),
        child.responses_url(),
        opts.fault_rate,
        DEADLINE,
        TENANTS,
    ));
    let ledger = ctx.ledger.clone();
    let tally = ctx.tally.clone();
    eprintln!(
        "soak: {} for {:?}, {} workers, fault rate {}, seed {} (tether log: {})",
        child.addr,
        opts.duration,
        opts.concurrency,
        opts.fault_rate,
        opts.seed,
        child.log.display()
    );

    let started = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| tokio::spawn(conversation::worker(ctx.clone(), opts.seed, w)))
        .collect();
    let mut rss = Vec::new();
    let progress_every = if quick { 5 } else { 10 };
    let mut last_sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while started.elapsed() < opts.duration {
        tick.tick().await;
        rss.push((started.elapsed(), child.rss_mb()));
        ledger.check(&emu, Some(ORACLE_KEEP));
        let secs = started.elapsed().as_secs();
        if secs > 0 && secs % REFUSE_EVERY == 0 {
            emu.inject("ws:refuse_upgrade=426".parse()?);
        }
        if secs > 0 && secs % progress_every == 0 {
            let m = child.metrics(&client).await.unwrap_or_default();
            let sent = tally.requests.load(Ordering::Relaxed);
            let rate = (sent - last_sent) as f64 / progress_every as f64;
            last_sent = sent;
            progress(secs, &tally, rate, &ledger.tally(), rss.last().map_or(0.0, |x| x.1), &m);
        }
    }
    let load_time = started.elapsed();
    ctx.stop.store(true, Ordering::Relaxed);
    eprintln!("soak: load stopped after {load_time:.1?}; waiting for conversations to finish");
    for w in workers {
        // Every request has a deadline, so this ends; the margin is for the bench itself.
        let _ = tokio::time::timeout(DEADLINE + Duration::from_secs(10), w).await;
    }
    // The last handle on the load's client: its keep-alive connections close.
    drop(ctx);
    let idle = wait_idle(&child, &client, &baseline, opts.concurrency).await;
    ledger.check(&emu, None);
    let oracle = ledger.tally();
    let sessions_created = child.sessions_created(&client).await.ok().flatten();
    let (_, peak) = common::rss_mb(child.pid);
    let exit = child.stop().await;
    let stats = emu.stats();
    emu.shutdown();

    let window = (opts.duration / 4).min(Duration::from_secs(60));
    let max_in = |from: Duration, to: Duration| {
        rss.iter().filter(|(t, _)| *t >= from && *t <= to).map(|x| x.1).fold(0.0, f64::max)
    };
    let warmup = max_in(Duration::ZERO, window);
    let last = max_in(load_time.saturating_sub(window), load_time);
    let bounded = last <= warmup * 1.25 + 10.0;
    let t = &*tally;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    let mut fail_if = |cond: bool, why: String| {
        if cond {
            failures.push(why);
        }
    };
    fail_if(get(&t.bad) > 0, format!("{} bad answers", get(&t.bad)));
    fail_if(get(&t.hung) > 0, format!("{} requests hung past {DEADLINE:?}", get(&t.hung)));
    fail_if(oracle.mismatches > 0, format!("{} oracle mismatches", oracle.mismatches));
    fail_if(oracle.unmatched > 0, format!("{} upstream contexts no request accounts for", oracle.unmatched));
    fail_if(!bounded, format!("RSS not bounded: last window {last:.1} MB vs warm-up {warmup:.1} MB"));
    for leak in idle.leaks() {
        fail_if(true, leak);
    }
    fail_if(exit != Some(0), format!("tether exited with {exit:?} on SIGTERM"));
    fail_if(get(&t.requests) == 0, "no request was sent".into());
    let after = |name: &str| idle.metrics.get(name).map_or(Value::Null, |v| json!(v));
    let mut report = json!({
        "passed": failures.is_empty(),
        "failures": failures,
        "duration_s": load_time.as_secs_f64(),
        "workers": opts.concurrency,
        "fault_rate": opts.fault_rate,
        "seed": opts.seed,
        "conversations": get(&t.conversations),
        "conversations_finished": get(&t.finished),
        "requests": get(&t.requests),
        "requests_per_s": get(&t.requests) as f64 / load_time.as_secs_f64(),
        "ok": get(&t.ok),
        "clean_errors": get(&t.clean),
        "bad": get(&t.bad),
        "hung": get(&t.hung),
        "abandoned": get(&t.abandoned),
        "faults_injected": get(&t.faults),
        "faults_applied_upstream": stats.faults_applied,
        "recovery_turns_ok": get(&t.recovered),
        "edits": get(&t.edits),
        "rewinds": get(&t.rewinds),
        "routes": t.routes(),
        "bad_examples": t.bad_examples(),
        "oracle_checked": oracle.checked,
        "oracle_mismatches": oracle.mismatches,
        "oracle_unmatched": oracle.unmatched,
        "oracle_examples": oracle.examples,
    });
    let more = json!({
        "sessions_created": sessions_created,
        "sessions_started_by_completed_fresh_turns": get(&t.fresh_completed),
        "upstream_ws_connections": stats.ws_connections,
        "upstream_requests_ws": stats.requests_ws,
        "upstream_requests_http": stats.requests_http,
        "upstream_continuations": stats.continuations,
        "peak_rss_mb": peak,
        "rss_warmup_mb": warmup,
        "rss_last_mb": last,
        "rss_window_s": window.as_secs_f64(),
        "rss_bounded": bounded,
        "rss_rule": RSS_RULE,
        "rss_samples_mb": rss.iter().step_by(rss.len().div_ceil(60).max(1)).map(|x| (x.1 * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "idle_wait_s": idle.waited.as_secs_f64(),
        "requests_in_flight_after": idle.in_flight,
        "client_connections_after": idle.connections,
        "sockets_open_after": idle.sockets_open,
        "sockets_busy_after": idle.sockets_busy,
        "tasks_alive_beyond_baseline_after": idle.extra_tasks,
        "sessions_live_after": after("tether_sessions_live"),
        "tasks_alive_before": baseline.get("tether_runtime_tasks_alive"),
        "tasks_alive_after": after("tether_runtime_tasks_alive"),
        "idle_rule": "once the load's client is gone: 0 requests in flight (besides the scrape), 0 client connections and 0 upstream sockets beyond the scraper's, runtime tasks back to the count before the load (if the HTTP fallback ran, plus its pool reaper and at most two idle keep-alive connections per worker)",
        "sockets_opened_total": after("tether_upstream_sockets_opened"),
        "http_fallbacks": idle.metrics.get("tether_http_fallbacks_total").unwrap_or(0.0),
        "tether_plans": idle.metrics.by_label("tether_requests_total", "plan"),
        "tether_fresh_reasons": idle.metrics.by_label("tether_requests_total", "reason"),
        "tether_recoveries": idle.metrics.by_label("tether_recoveries_total", "kind"),
        "tether_outcomes": idle.metrics.by_label("tether_turn_outcomes_total", "outcome"),
        "tether_exit_code": exit,
        "tether_config": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
    });
    if let (Some(report), Value::Object(more)) = (report.as_object_mut(), more) {
        report.extend(more);
    }
    Ok(report)
}

/// One progress line on stderr.
fn progress(secs: u64, t: &Tally, rate: f64, o: &oracle::Tally, rss: f64, m: &Metrics) {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "[soak {secs:>4}s] conv {} req {} ({:.0}/s) ok {} clean {} bad {} hung {} abandoned {} | oracle {} checked {} bad | rss {rss:.1} MB sockets {} sessions {}",
        get(&t.conversations),
        get(&t.requests),
        rate,
        get(&t.ok),
        get(&t.clean),
        get(&t.bad),
        get(&t.hung),
        get(&t.abandoned),
        o.checked,
        o.mismatches + o.unmatched,
        m.get("tether_upstream_sockets_open").unwrap_or(-1.0),
        m.get("tether_sessions_live").unwrap_or(-1.0),
    );
}

/// tether after the load, once it should be idle.
struct Idle {
    waited: Duration,
    metrics: Metrics,
    /// Requests in flight, not counting the scrape itself.
    in_flight: f64,
    /// Client connections open beyond the scraper's own.
    connections: f64,
    sockets_open: f64,
    sockets_busy: f64,
    /// Runtime tasks alive beyond those before the load.
    extra_tasks: f64,
    /// Extra tasks allowed when the fallback was used: the HTTP client's
    /// pool reaper and its idle keep-alive connections to the upstream (they
    /// go after 90 s idle): one per worker, twice over, since hyper's client
    /// may open a connection while another is on its way back to the pool.
    /// A leak would grow with requests (hundreds of thousands), not workers.
    allowed_tasks: f64,
}

impl Idle {
    fn of(metrics: Metrics, baseline: &Metrics, waited: Duration, workers: usize) -> Idle {
        let gauge = |m: &Metrics, name: &str| m.get(name).unwrap_or(f64::NAN);
        let fallbacks = metrics.get("tether_http_fallbacks_total").unwrap_or(0.0) > 0.0;
        Idle {
            waited,
            in_flight: gauge(&metrics, "tether_requests_in_flight") - 1.0,
            connections: gauge(&metrics, "tether_client_connections_open")
                - gauge(baseline, "tether_client_connections_open"),
            sockets_open: gauge(&metrics, "tether_upstream_sockets_open"),
            sockets_busy: gauge(&metrics, "tether_upstream_sockets_busy"),
            extra_tasks: gauge(&metrics, "tether_runtime_tasks_alive")
                - gauge(baseline, "tether_runtime_tasks_alive"),
            allowed_tasks: if fallbacks { 1.0 + 2.0 * workers as f64 } else { 0.0 },
            metrics,
        }
    }

    /// What is still held that should not be (NaN, a missing gauge, counts).
    fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, n: f64, allowed: f64| {
            if n.is_nan() || n > allowed {
                out.push(format!("{what}: {n} at idle (allowed {allowed})"));
            }
        };
        check("requests in flight", self.in_flight, 0.0);
        check("client connections", self.connections, 0.0);
        check("upstream sockets open", self.sockets_open, 0.0);
        check("upstream sockets busy", self.sockets_busy, 0.0);
        check("runtime tasks beyond the baseline", self.extra_tasks, self.allowed_tasks);
        out
    }
}

/// Scrapes until tether holds nothing for the finished load (or 20 s
/// pass: the pool's idle timeout is 3 s).
async fn wait_idle(child: &Child, client: &common::HttpClient, baseline: &Metrics, workers: usize) -> Idle {
    let started = Instant::now();
    loop {
        let metrics = child.metrics(client).await.unwrap_or_default();
        let idle = Idle::of(metrics, baseline, started.elapsed(), workers);
        if idle.leaks().is_empty() || started.elapsed() > Duration::from_secs(20) {
            return idle;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

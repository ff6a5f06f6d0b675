//! `tether-bench`: performance scenarios, each measured in one run against
//! references (direct calls to the emulator, and nginx when installed).
//! Results print as a table and, with `--json PATH`, as JSON. See
//! BENCHMARKS.md for the figures and how they were obtained.

mod child;
mod common;
mod compare;
mod events;
mod floor;
mod latency;
mod loops;
mod memory;
mod nginx;
mod soak;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tether-bench", about = "tether's performance scenarios")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Tiny sizes: checks that every scenario runs (used by benches/smoke).
    #[arg(long, global = true)]
    quick: bool,
    /// Where `overhead`, `stream` and `throughput` (and `compare`) run their
    /// emulator: a process of its own, like a remote upstream, or inside
    /// this one (the harness of the figures before 2026-12-02 15:40).
    #[arg(long, global = true, value_enum, default_value_t = common::Placement::Process)]
    emulator: common::Placement,
    /// The tether binary whose `emulate` is that process [default: the
    /// `tether` next to this binary].
    #[arg(long, global = true)]
    emulator_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// Non-streaming agent turns at concurrency 1: added latency.
    Overhead {
        #[arg(long, default_value_t = 5000)]
        requests: usize,
    },
    /// Streaming turns with 64 paced deltas: added time to first event and gaps.
    Stream {
        /// Measured turns per path, for each of the two kinds of time to
        /// first event (a p99 of 1,000 is the tenth worst; of 200, the
        /// second worst).
        #[arg(long, default_value_t = 1000)]
        turns: usize,
    },
    /// Closed-loop load at rising concurrency: best rate with p99 < 10 ms.
    Throughput {
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Load one side only (to profile it); the share is then not computed.
        #[arg(long, value_enum, default_value_t = latency::Side::Both)]
        side: latency::Side,
    },
    /// N concurrent streaming conversations through a tether child process.
    Concurrency {
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        #[arg(long, default_value_t = 3)]
        turns: usize,
    },
    /// The 30-turn agent loop, direct vs through tether, zero and illustrative profiles.
    Loop {
        #[arg(long, default_value_t = 29)]
        tool_calls: usize,
    },
    /// One conversation grown to 1 MB: tether's own time per turn vs one parse.
    Large {
        #[arg(long, default_value_t = 1_000_000)]
        bytes: usize,
        #[arg(long, default_value_t = 30)]
        samples: usize,
    },
    /// Reliability, not speed: many conversations with random faults, churn
    /// and hang-ups through a tether child process; exits 1 unless it held.
    Soak {
        /// How long load runs ("10m", "30s").
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Conversation workers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Share of requests that carry an upstream fault.
        #[arg(long, default_value_t = 0.05)]
        fault_rate: f64,
        /// Seeds every random choice of the load.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Every performance scenario in turn (not `soak`; JSON: one object keyed by scenario).
    All,
    /// Paired rounds: one timing scenario driving two tether binaries in
    /// alternation (A B, B A, …); each round's key figures, each side's
    /// median and the median paired difference (candidate − baseline).
    Compare {
        /// The tether binary to compare against (e.g. one built at an older commit).
        #[arg(long)]
        baseline: PathBuf,
        /// The tether binary under test [default: the `tether` next to this binary].
        #[arg(long)]
        candidate: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = compare::Compared::Overhead)]
        scenario: compare::Compared,
        #[arg(long, default_value_t = 4)]
        rounds: usize,
        /// Size of each run: requests (overhead, default 3000), turns (stream,
        /// 600) or seconds per level (throughput, 2).
        #[arg(long)]
        size: Option<f64>,
    },
    /// The targets over several runs: the JSON files `all` (or one
    /// scenario) wrote, each judged as in its run; per target, in how many
    /// runs it was met and the median and range of its figure.
    Verdict {
        /// The runs' JSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// A bare hyper reverse proxy (the floor reference `overhead` runs as a
    /// child process); serves until killed.
    #[command(hide = true)]
    FloorProxy {
        /// `http://host:port` to relay to.
        #[arg(long)]
        upstream: String,
    },
}

async fn run(s: &Scenario, quick: bool) -> anyhow::Result<serde_json::Value> {
    Ok(match s {
        Scenario::Overhead { requests } => latency::overhead(if quick { 100 } else { *requests }).await?,
        Scenario::Stream { turns } => latency::stream(if quick { 5 } else { *turns }).await?,
        Scenario::Throughput { seconds, side } => {
            latency::throughput(if quick { 0.1 } else { *seconds }, *side).await?
        }
        Scenario::Concurrency { conversations, turns } => {
            memory::concurrency(if quick { 20 } else { *conversations }, *turns).await?
        }
        Scenario::Loop { tool_calls } => {
            let profiles: &[&str] = if quick { &["zero"] } else { &["zero", "illustrative"] };
            loops::agent_loop(if quick { 5 } else { *tool_calls }, profiles).await?
        }
        Scenario::Large { bytes, samples } => {
            loops::large(if quick { 100_000 } else { *bytes }, if quick { 3 } else { *samples }).await?
        }
        Scenario::Soak { duration, concurrency, fault_rate, seed } => {
            let opts = soak::SoakOpts {
                duration: *duration,
                concurrency: *concurrency,
                fault_rate: *fault_rate,
                seed: *seed,
            };
            soak::soak(if quick { opts.quick() } else { opts }, quick).await?
        }
        Scenario::Compare { baseline, candidate, scenario, rounds, size } => {
            let candidate = match candidate {
                Some(c) => c.clone(),
                None => child::sibling_tether()?,
            };
            let (rounds, size) = if quick {
                (1, Some(if *scenario == compare::Compared::Throughput { 0.1 } else { 5.0 }))
            } else {
                (*rounds, *size)
            };
            compare::compare(*scenario, baseline, &candidate, rounds, size).await?
        }
        Scenario::All | Scenario::FloorProxy { .. } | Scenario::Verdict { .. } => {
            unreachable!("handled by the caller")
        }
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::FloorProxy { upstream } = &cli.scenario {
        return floor::serve(upstream);
    }
    if let Scenario::Verdict { files } = &cli.scenario {
        let summary = targets::over_runs(files)?;
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
        }
        return Ok(());
    }
    common::place_emulator(cli.emulator, cli.emulator_bin.clone());
    // On SIGINT or SIGTERM the scenario is dropped, and with it the child
    // processes it started (tether, the emulator, nginx, the floor), before exiting.
    let outcome = tokio::runtime::Runtime::new()?.block_on(async {
        tokio::select! {
            done = scenarios(cli) => Ok(done),
            signal = interrupted() => Err(signal),
        }
    });
    match outcome {
        Ok(done) => done,
        Err((name, code)) => {
            eprintln!("tether-bench: stopped by {name}; its child processes were stopped too");
            std::process::exit(128 + code)
        }
    }
}

/// The first SIGINT or SIGTERM.
async fn interrupted() -> (&'static str, i32) {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => ("SIGINT", 2),
            _ = term.recv() => ("SIGTERM", 15),
        },
        _ => std::future::pending().await,
    }
}

async fn scenarios(cli: Cli) -> anyhow::Result<()> {
    let all = [
        ("overhead", Scenario::Overhead { requests: 5000 }),
        ("stream", Scenario::Stream { turns: 1000 }),
        ("throughput", Scenario::Throughput { seconds: 2.0, side: latency::Side::Both }),
        ("concurrency", Scenario::Concurrency { conversations: 1000, turns: 3 }),
        ("loop", Scenario::Loop { tool_calls: 29 }),
        ("large", Scenario::Large { bytes: 1_000_000, samples: 30 }),
    ];
    let chosen: Vec<(&str, Scenario)> = match &cli.scenario {
        Scenario::All => all.to_vec(),
        soak @ Scenario::Soak { .. } => vec![("soak", soak.clone())],
        compare @ Scenario::Compare { .. } => vec![("compare", compare.clone())],
        one => vec![(
            all.iter()
                .find(|(_, s)| std::mem::discriminant(s) == std::mem::discriminant(one))
                .map_or("", |x| x.0),
            one.clone(),
        )],
    };
    let mut out = serde_json::Map::new();
    for (i, (name, s)) in chosen.iter().enumerate() {
        let sizes = if cli.quick { " at --quick sizes" } else { "" };
        eprintln!("tether-bench: [{}/{}] {s:?}{sizes} …", i + 1, chosen.len());
        let started = std::time::Instant::now();
        let result = run(s, cli.quick).await?;
        // `compare` prints its own table (its JSON holds every round).
        if *name != "compare" {
            common::report(name, &result, None)?;
        }
        eprintln!("tether-bench: {name} done in {:.0?}", started.elapsed());
        out.insert((*name).to_string(), result);
    }
    let failed: Vec<String> =
        out.iter().filter(|(_, v)| v["passed"] == false).map(|(k, _)| k.clone()).collect();
    let verdicts = targets::judge(&out, cli.quick);
    if let Some(path) = &cli.json {
        let mut doc = if out.len() == 1 {
            out.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        } else {
            out.into()
        };
        if !verdicts.is_null() {
            doc["targets"] = verdicts;
        }
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    if !failed.is_empty() {
        eprintln!("tether-bench: {} did not hold (see `failures` above)", failed.join(", "));
        std::process::exit(1);
    }
    Ok(())
}

//! `compare`: paired rounds of one timing scenario, driving two tether
//! binaries alternately (A B, then B A, …) with this one bench, so the
//! drift of a shared machine falls on both alike. Each round reports the
//! scenario's key figures for both; the summary gives each side's median
//! and the median of the paired differences (candidate − baseline). This is
//! how BENCHMARKS.md compares two versions of tether: one run of each says
//! little on a machine whose speed moves 2× within minutes.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::child;
use crate::common::{median, readable};
use crate::latency;

/// The scenarios a comparison can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compared {
    Overhead,
    Stream,
    Throughput,
}

impl Compared {
    /// The figures compared, read from (or computed off) the scenario's JSON.
    fn figures(self) -> &'static [&'static str] {
        match self {
            Compared::Overhead => &[
                "added_p50_us",
                "added_p99_us",
                "tether_cpu_us_per_request",
                "cpu_ratio_to_floor",
                "nginx_added_p99_us",
            ],
            Compared::Stream => {
                &["added_ttfe_p50_us", "added_ttfe_p99_us", "tether_prepare_p50_us", "tether_cpu_us_per_turn"]
            }
            Compared::Throughput => &["tether_rps", "direct_rps", "tether_rps_share"],
        }
    }

    /// One run of the scenario, at `size` (requests, turns, or seconds per
    /// level) or its default.
    async fn run(self, size: Option<f64>) -> anyhow::Result<Value> {
        let mut out = match self {
            Compared::Overhead => latency::overhead(size.map_or(3000, |s| s as usize)).await?,
            Compared::Stream => latency::stream(size.map_or(600, |s| s as usize)).await?,
            Compared::Throughput => latency::throughput(size.unwrap_or(2.0), latency::Side::Both).await?,
        };
        if self == Compared::Overhead {
            let (t, f) = (&out["tether_cpu_us_per_request"], &out["floor_cpu_us_per_request"]);
            if let (Some(t), Some(f)) = (t.as_f64(), f.as_f64())
                && f > 0.0
            {
                out["cpu_ratio_to_floor"] = json!((t / f * 1000.0).round() / 1000.0);
            }
        }
        Ok(out)
    }
}

/// The figures of one run.
fn pick(run: &Value, names: &[&str]) -> Value {
    names.iter().map(|n| (n.to_string(), run[*n].clone())).collect::<serde_json::Map<_, _>>().into()
}

/// Runs `rounds` paired rounds of `scenario`, `baseline` against
/// `candidate`; prints a table per round and the summary.
pub async fn compare(
    scenario: Compared,
    baseline: &Path,
    candidate: &Path,
    rounds: usize,
    size: Option<f64>,
) -> anyhow::Result<Value> {
    for bin in [baseline, candidate] {
        anyhow::ensure!(bin.is_file(), "{} is not a file", bin.display());
    }
    let names = scenario.figures();
    let sides: [(&str, PathBuf); 2] = [("baseline", baseline.into()), ("candidate", candidate.into())];
    let mut per_round = Vec::new();
    for round in 0..rounds {
        // A B, then B A: neither side always runs first.
        let order: Vec<usize> = if round % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        let mut figures = [Value::Null, Value::Null];
        for k in order {
            let (side, bin) = &sides[k];
            eprintln!("tether-bench: compare round {}/{rounds}: {side} ({})", round + 1, bin.display());
            child::use_tether(Some(bin.clone()));
            let run = scenario.run(size).await;
            child::use_tether(None);
            figures[k] = pick(&run?, names);
        }
        let [a, b] = figures;
        per_round.push(json!({"round": round + 1, "baseline": a, "candidate": b}));
    }
    println!("\ncompare {scenario:?}: baseline {} | candidate {}", baseline.display(), candidate.display());
    println!(
        "  {:<28} {:<40} {:>10} {:>10} {:>10}  lower",
        "figure", "per round (baseline | candidate)", "median A", "median B", "B − A"
    );
    let mut summary = serde_json::Map::new();
    for name in names {
        let of =
            |side: &str| -> Vec<f64> { per_round.iter().filter_map(|r| r[side][*name].as_f64()).collect() };
        let diffs: Vec<f64> = per_round
            .iter()
            .filter_map(|r| Some(r["candidate"][*name].as_f64()? - r["baseline"][*name].as_f64()?))
            .collect();
        let lower = diffs.iter().filter(|d| **d < 0.0).count();
        let rounds: Vec<String> = per_round
            .iter()
            .map(|r| format!("{} | {}", readable(&r["baseline"][*name]), readable(&r["candidate"][*name])))
            .collect();
        let paired = diffs.len();
        let (ma, mb, md) = (median(of("baseline")), median(of("candidate")), median(diffs));
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| readable(&json!(x)));
        println!(
            "  {name:<28} {:<40} {:>10} {:>10} {:>10}  {lower} of {paired}",
            rounds.join(", "),
            opt(ma),
            opt(mb),
            opt(md),
        );
        summary.insert(
            name.to_string(),
            json!({
                "baseline_median": ma,
                "candidate_median": mb,
                "median_difference": md,
                "rounds_lower": format!("{lower} of {paired}"),
            }),
        );
    }
    Ok(json!({
        "scenario": format!("{scenario:?}").to_lowercase(),
        "baseline": baseline.display().to_string(),
        "candidate": candidate.display().to_string(),
        "rounds": per_round,
        "summary": summary,
    }))
}

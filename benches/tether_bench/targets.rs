//! Issue #8's targets, judged from the figures a run measured: each one
//! whose scenario ran, with its value, its bound and whether it held.

use serde_json::{Value, json};

use crate::common::median;

/// One target's verdict.
struct Verdict {
    name: &'static str,
    value: String,
    bound: String,
    met: bool,
    /// The one number the target is about (tether's added p99, the share,
    /// the ratio…), in `unit`: what `verdict` takes the median of.
    figure: f64,
    unit: &'static str,
    /// What the bound compares the figure with, when measured in the same
    /// run (nginx's added p99).
    reference: Option<f64>,
}

/// The verdicts for every target whose scenario is in `results` (keyed by
/// scenario name, as `all` writes them).
fn verdicts(results: &serde_json::Map<String, Value>) -> Vec<Verdict> {
    let num = |scenario: &str, path: &[&str]| -> Option<f64> {
        path.iter().try_fold(results.get(scenario)?, |v, k| v.get(k))?.as_f64()
    };
    let mut out = Vec::new();
    if let Some(added) = num("overhead", &["added_p99_us"]) {
        let nginx = num("overhead", &["nginx_added_p99_us"]);
        out.push(Verdict {
            name: "overhead added_p99_us",
            value: match nginx {
                Some(n) => format!("{added:.0} µs (nginx's {n:.0} µs)"),
                None => format!("{added:.0} µs"),
            },
            bound: match nginx {
                Some(_) => "≤ 150 µs and ≤ nginx's".into(),
                None => "≤ 150 µs (nginx not run)".into(),
            },
            met: added <= 150.0 && nginx.is_none_or(|n| added <= n),
            figure: added,
            unit: "µs",
            reference: nginx,
        });
    }
    if let Some(ttfe) = num("stream", &["added_ttfe_p99_us"]) {
        out.push(Verdict {
            name: "stream added_ttfe_p99_us",
            value: format!("{ttfe:.0} µs"),
            bound: "≤ 200 µs".into(),
            met: ttfe <= 200.0,
            figure: ttfe,
            unit: "µs",
            reference: None,
        });
    }
    if let (Some(t), Some(d)) = (num("throughput", &["tether_rps"]), num("throughput", &["direct_rps"])) {
        let share = if d > 0.0 { t / d } else { 0.0 };
        out.push(Verdict {
            name: "throughput tether_rps / direct_rps",
            value: format!("{:.1}%", share * 100.0),
            bound: "≥ 50%".into(),
            met: share >= 0.5,
            figure: share * 100.0,
            unit: "%",
            reference: None,
        });
    }
    if let (Some(errors), Some(mismatches)) =
        (num("concurrency", &["errors"]), num("concurrency", &["oracle_mismatches"]))
    {
        let n = num("concurrency", &["conversations"]).unwrap_or(0.0);
        out.push(Verdict {
            name: "concurrency errors / oracle_mismatches",
            value: format!("{errors:.0} / {mismatches:.0} of {n:.0} conversations"),
            bound: "0 / 0".into(),
            met: errors == 0.0 && mismatches == 0.0,
            figure: errors + mismatches,
            unit: "errors and mismatches",
            reference: None,
        });
    }
    if let (Some(peak), Some(idle)) =
        (num("concurrency", &["peak_rss_mb"]), num("concurrency", &["idle_rss_mb"]))
    {
        out.push(Verdict {
            name: "concurrency peak_rss_mb / idle_rss_mb",
            value: format!("{peak:.1} / {idle:.1} MB"),
            bound: "< 200 / < 20 MB".into(),
            met: peak < 200.0 && idle < 20.0,
            figure: peak,
            unit: "MB at peak",
            reference: None,
        });
    }
    if let Some(ratio) = num("loop", &["zero", "bytes_ratio"]) {
        out.push(Verdict {
            name: "loop bytes_ratio",
            value: format!("{ratio:.3}"),
            bound: "≤ 0.12".into(),
            met: ratio <= 0.12,
            figure: ratio,
            unit: "",
            reference: None,
        });
    }
    if let Some(share) = num("loop", &["zero", "cached_token_share"]) {
        out.push(Verdict {
            name: "loop cached_token_share",
            value: format!("{share:.3}"),
            bound: "≥ 0.9".into(),
            met: share >= 0.9,
            figure: share,
            unit: "",
            reference: None,
        });
    }
    if let (Some(added), Some(parse)) =
        (num("large", &["added_p50_us_at_1mb"]), num("large", &["parse_us_at_1mb"]))
    {
        let ratio = if parse > 0.0 { added / parse } else { f64::INFINITY };
        out.push(Verdict {
            name: "large added_p50_us_at_1mb / parse_us_at_1mb",
            value: format!("{added:.0} / {parse:.0} µs = {ratio:.2}×"),
            bound: "≤ 1.5×".into(),
            met: ratio <= 1.5,
            figure: ratio,
            unit: "×",
            reference: None,
        });
    }
    out
}

/// Prints the verdicts as a table and returns them as JSON (`null` when no
/// scenario with a target ran). A quick run's figures are not judged.
pub fn judge(results: &serde_json::Map<String, Value>, quick: bool) -> Value {
    let all = verdicts(results);
    if all.is_empty() {
        return Value::Null;
    }
    println!("\ntargets (issue #8){}", if quick { ": not judged on --quick sizes" } else { "" });
    for v in &all {
        let met = match (quick, v.met) {
            (true, _) => "-",
            (false, true) => "met",
            (false, false) => "MISSED",
        };
        println!("  {:<46} {:<30} {:<32} {met}", v.name, v.value, v.bound);
    }
    all.iter()
        .map(|v| {
            let met = if quick { Value::Null } else { json!(v.met) };
            json!({"target": v.name, "value": v.value, "bound": v.bound, "met": met,
                   "figure": v.figure, "unit": v.unit, "reference": v.reference})
        })
        .collect()
}

/// One target over several runs.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    met: usize,
    figures: Vec<f64>,
    unit: String,
    bounds: Vec<String>,
    references: Vec<f64>,
}

/// The targets over several runs' JSON documents (`name`, document): for
/// each, in how many runs it was met, and the median and range of its
/// figure. On this machine a single run's timing verdicts follow the
/// spell it fell in; this is the view that does not.
fn tally(docs: &[(String, Value)]) -> anyhow::Result<Vec<(String, Tally)>> {
    let mut out: Vec<(String, Tally)> = Vec::new();
    for (name, doc) in docs {
        for v in judged(name, doc)? {
            let i = match out.iter().position(|(n, _)| *n == v.target) {
                Some(i) => i,
                None => {
                    out.push((v.target, Tally::default()));
                    out.len() - 1
                }
            };
            let tally = &mut out[i].1;
            tally.runs += 1;
            tally.met += usize::from(v.met);
            if let Some(f) = v.figure {
                tally.figures.push(f);
                tally.unit = v.unit;
            }
            tally.bounds.push(v.bound);
            tally.references.extend(v.reference);
        }
    }
    Ok(out)
}

/// One target's verdict in one run, as `verdict` reads it back.
struct Judged {
    target: String,
    met: bool,
    /// Absent in the `targets` of runs written before it was kept.
    figure: Option<f64>,
    unit: String,
    bound: String,
    reference: Option<f64>,
}

/// One run's verdicts. A document of `all` is judged again from its
/// figures (so runs written before the figure was kept in `targets` have
/// one too); one scenario's document by the `targets` it holds. A
/// `--quick` run's are refused.
fn judged(name: &str, doc: &Value) -> anyhow::Result<Vec<Judged>> {
    let stored = doc.get("targets").and_then(Value::as_array);
    if stored.is_some_and(|ts| ts.iter().any(|t| t["met"].is_null())) {
        anyhow::bail!("{name}: its targets were not judged (a --quick run?)");
    }
    if let Some(results) = doc.as_object() {
        let again = verdicts(results);
        if !again.is_empty() {
            return Ok(again
                .into_iter()
                .map(|v| Judged {
                    target: v.name.to_string(),
                    met: v.met,
                    figure: Some(v.figure),
                    unit: v.unit.to_string(),
                    bound: v.bound,
                    reference: v.reference,
                })
                .collect());
        }
    }
    let Some(stored) = stored else {
        anyhow::bail!(
            "{name}: no `targets` (write it with `tether-bench all --json` or one scenario's --json)"
        );
    };
    Ok(stored
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            Judged {
                target: text("target"),
                met: t["met"].as_bool().unwrap_or(false),
                figure: t["figure"].as_f64(),
                unit: text("unit"),
                bound: text("bound"),
                reference: t["reference"].as_f64(),
            }
        })
        .collect())
}

/// `tether-bench verdict FILE…`: prints the targets over the runs the
/// files hold and returns the same as JSON.
pub fn over_runs(files: &[std::path::PathBuf]) -> anyhow::Result<Value> {
    anyhow::ensure!(!files.is_empty(), "verdict: name the JSON files of one or more runs");
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON ({e})", f.display()))?;
        docs.push((f.display().to_string(), doc));
    }
    let tallies = tally(&docs)?;
    println!("targets (issue #8) over {} runs", docs.len());
    let mut rows = Vec::new();
    for (name, t) in &tallies {
        let bound = if t.bounds.windows(2).all(|w| w[0] == w[1]) {
            t.bounds.first().cloned().unwrap_or_default()
        } else {
            "(not the same in every run)".to_string()
        };
        let (figure, reference) = (median(t.figures.clone()), median(t.references.clone()));
        let mut figures = String::new();
        if let Some(m) = figure {
            let (lo, hi) =
                t.figures.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
            figures = format!("median {}{} ({}–{})", fmt(m), spaced(&t.unit), fmt(lo), fmt(hi));
        }
        if let Some(r) = reference {
            figures = format!("{figures}; nginx's median {} µs", fmt(r));
        }
        println!("  {name:<46} met in {:>2} of {:<2}  {bound:<24} {figures}", t.met, t.runs);
        rows.push(json!({
            "target": name, "runs": t.runs, "met": t.met, "bound": bound, "unit": t.unit,
            "median": figure,
            "figures": t.figures,
            "reference_median": reference,
        }));
    }
    Ok(json!({"runs": docs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), "targets": rows}))
}

/// A unit after a number: " µs", "%", "×".
fn spaced(unit: &str) -> String {
    match unit {
        "" | "%" | "×" => unit.to_string(),
        u => format!(" {u}"),
    }
}

/// A figure with the precision its size deserves.
fn fmt(x: f64) -> String {
    match x.abs() {
        _ if x.fract() == 0.0 => format!("{x:.0}"),
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn each_target_is_judged_from_its_figures() {
        let r = results(json!({
            "overhead": {"added_p99_us": 140.0, "nginx_added_p99_us": 120.0},
            "stream": {"added_ttfe_p99_us": 150.0},
            "throughput": {"tether_rps": 600.0, "direct_rps": 1000.0},
            "concurrency": {"conversations": 1000, "errors": 0, "oracle_mismatches": 1,
                            "peak_rss_mb": 60.0, "idle_rss_mb": 6.0},
            "loop": {"zero": {"bytes_ratio": 0.07, "cached_token_share": 0.95}},
            "large": {"added_p50_us_at_1mb": 800.0, "parse_us_at_1mb": 500.0},
        }));
        let got: Vec<(&str, bool)> = verdicts(&r).iter().map(|v| (v.name, v.met)).collect();
        assert_eq!(
            got,
            [
                ("overhead added_p99_us", false), // under 150 µs, but above nginx's
                ("stream added_ttfe_p99_us", true),
                ("throughput tether_rps / direct_rps", true),
                ("concurrency errors / oracle_mismatches", false),
                ("concurrency peak_rss_mb / idle_rss_mb", true),
                ("loop bytes_ratio", true),
                ("loop cached_token_share", true),
                ("large added_p50_us_at_1mb / parse_us_at_1mb", false),
            ]
        );
    }

    #[test]
    fn only_scenarios_that_ran_are_judged() {
        let r = results(json!({"stream": {"added_ttfe_p99_us": 250.0}}));
        let v = verdicts(&r);
        assert_eq!(v.len(), 1);
        assert!(!v[0].met);
        assert_eq!(judge(&results(json!({"soak": {"passed": true}})), false), Value::Null);
    }

    fn run(added_p99: f64, nginx_p99: f64, share: f64) -> Value {
        let r = results(json!({
            "overhead": {"added_p99_us": added_p99, "nginx_added_p99_us": nginx_p99},
            "throughput": {"tether_rps": share * 1000.0, "direct_rps": 1000.0},
        }));
        let mut doc = Value::Object(r.clone());
        doc["targets"] = judge(&r, false);
        doc
    }

    #[test]
    fn runs_are_tallied_per_target() {
        let docs = vec![
            ("a".to_string(), run(140.0, 160.0, 0.40)),
            ("b".to_string(), run(300.0, 200.0, 0.55)),
            ("c".to_string(), run(120.0, 130.0, 0.60)),
        ];
        let t = tally(&docs).unwrap();
        assert_eq!(t.len(), 2);
        let (name, over) = &t[0];
        assert_eq!(name, "overhead added_p99_us");
        assert_eq!((over.runs, over.met), (3, 2));
        assert_eq!(median(over.figures.clone()), Some(140.0));
        assert_eq!(over.unit, "µs");
        let (name, share) = &t[1];
        assert_eq!(name, "throughput tether_rps / direct_rps");
        assert_eq!((share.runs, share.met), (3, 2));
        assert!((median(share.figures.clone()).unwrap() - 55.0).abs() < 1e-9);
    }

    #[test]
    fn unjudged_or_foreign_documents_are_refused() {
        let quick = results(json!({"stream": {"added_ttfe_p99_us": 1.0}}));
        let doc = json!({"targets": judge(&quick, true)});
        let err = tally(&[("q.json".into(), doc)]).unwrap_err().to_string();
        assert!(err.contains("q.json") && err.contains("not judged"), "{err}");
        let err = tally(&[("x.json".into(), json!({"soak": {}}))]).unwrap_err().to_string();
        assert!(err.contains("x.json") && err.contains("no `targets`"), "{err}");
        // One scenario's document (its figures not keyed by scenario) is
        // counted by the targets it holds.
        let one = json!({"added_ttfe_p99_us": 90.0, "targets": [{"target": "stream added_ttfe_p99_us",
            "value": "90 µs", "bound": "≤ 200 µs", "met": true, "figure": 90.0, "unit": "µs"}]});
        let t = tally(&[("s.json".into(), one)]).unwrap();
        assert_eq!((t[0].1.runs, t[0].1.met, t[0].1.figures.clone()), (1, 1, vec![90.0]));
    }
}

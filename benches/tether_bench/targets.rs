//! Issue #8's targets, judged from the figures a run measured: each one
//! whose scenario ran, with its value, its bound and whether it held.

use serde_json::{Value, json};

/// One target's verdict.
struct Verdict {
    name: &'static str,
    value: String,
    bound: String,
    met: bool,
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
            value: format!("{added:.0} µs"),
            bound: match nginx {
                Some(n) => format!("≤ 150 µs and ≤ nginx's {n:.0} µs"),
                None => "≤ 150 µs (nginx not run)".into(),
            },
            met: added <= 150.0 && nginx.is_none_or(|n| added <= n),
        });
    }
    if let Some(ttfe) = num("stream", &["added_ttfe_p99_us"]) {
        out.push(Verdict {
            name: "stream added_ttfe_p99_us",
            value: format!("{ttfe:.0} µs"),
            bound: "≤ 200 µs".into(),
            met: ttfe <= 200.0,
        });
    }
    if let (Some(t), Some(d)) = (num("throughput", &["tether_rps"]), num("throughput", &["direct_rps"])) {
        let share = if d > 0.0 { t / d } else { 0.0 };
        out.push(Verdict {
            name: "throughput tether_rps / direct_rps",
            value: format!("{:.1}%", share * 100.0),
            bound: "≥ 50%".into(),
            met: share >= 0.5,
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
        });
    }
    if let Some(ratio) = num("loop", &["zero", "bytes_ratio"]) {
        out.push(Verdict {
            name: "loop bytes_ratio",
            value: format!("{ratio:.3}"),
            bound: "≤ 0.12".into(),
            met: ratio <= 0.12,
        });
    }
    if let Some(share) = num("loop", &["zero", "cached_token_share"]) {
        out.push(Verdict {
            name: "loop cached_token_share",
            value: format!("{share:.3}"),
            bound: "≥ 0.9".into(),
            met: share >= 0.9,
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
            json!({"target": v.name, "value": v.value, "bound": v.bound, "met": met})
        })
        .collect()
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
}

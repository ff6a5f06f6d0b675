//! `tether tail`: a readable live view of tether's decisions.
//!
//! Reads `GET /debug/events` and prints one line per turn (session, plan,
//! reason, delta vs full size, times) with a running summary of bytes saved
//! and the reuse rate. Colored on a terminal, plain otherwise.

use std::io::{IsTerminal, Write};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Running totals over the records seen.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Turns seen.
    pub turns: u64,
    /// Of which continued.
    pub continued: u64,
    /// Client body bytes.
    pub bytes_in: u64,
    /// Upstream bytes.
    pub bytes_up: u64,
}

impl Summary {
    /// Adds one record.
    pub fn add(&mut self, r: &Value) {
        self.turns += 1;
        self.continued += u64::from(r["plan"] == "continue");
        self.bytes_in += r["bytes_in"].as_u64().unwrap_or(0);
        self.bytes_up += r["bytes_up"].as_u64().unwrap_or(0);
    }

    /// One line: reuse rate and bytes saved.
    pub fn line(&self) -> String {
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        format!(
            "-- {} turns, {:.0}% continued, {} of {} sent upstream ({:.0}% saved)",
            self.turns,
            pct(self.continued, self.turns),
            human(self.bytes_up),
            human(self.bytes_in),
            100.0 - pct(self.bytes_up, self.bytes_in)
        )
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10 << 20 => format!("{} MB", n >> 20),
        n if n >= 10 << 10 => format!("{} KB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Formats one record as a line; `color` adds ANSI colors.
pub fn format_record(r: &Value, color: bool) -> String {
    let plan = r["plan"].as_str().unwrap_or("?");
    let paint = |code: &str, s: &str| if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
    let plan_col = match plan {
        "continue" => paint("32", &format!("{plan:<14}")),
        "fresh" => paint("33", &format!("{plan:<14}")),
        _ => paint("36", &format!("{plan:<14}")),
    };
    let session = r["session"].as_u64().map_or("-".to_string(), |s| format!("s{s}"));
    let mut line = format!(
        "{:<7} {} {:>4}/{:<4} items  {:>9} / {:<9}  ttfe {:>7}  total {:>7}  {}",
        session,
        plan_col,
        r["items_up"].as_u64().unwrap_or(0),
        r["items_in"].as_u64().unwrap_or(0),
        human(r["bytes_up"].as_u64().unwrap_or(0)),
        human(r["bytes_in"].as_u64().unwrap_or(0)),
        r["ttfe_ms"].as_f64().map_or("-".into(), |v| format!("{v:.1}ms")),
        format!("{:.1}ms", r["total_ms"].as_f64().unwrap_or(0.0)),
        r["status"].as_u64().unwrap_or(0),
    );
    let outcome = r["outcome"].as_str().unwrap_or("");
    if outcome != "completed" && !outcome.is_empty() {
        line.push_str(&format!(" {}", paint("31", outcome)));
    }
    if let Some(detail) = r["detail"].as_str().filter(|_| plan != "continue") {
        line.push_str(&format!("  ({})", paint("2", detail)));
    }
    if let Some(rec) = r["recoveries"].as_array().filter(|a| !a.is_empty()) {
        let list: Vec<&str> = rec.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!("  recovered: {}", list.join(", ")));
    }
    line
}

/// Follows `{url}/debug/events` until the stream ends.
pub async fn run(url: &str, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let color = std::io::stdout().is_terminal();
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri = format!("{}/debug/events", url.trim_end_matches('/'));
    let resp = client
        .get(uri.parse()?)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {uri}: {e} (is tether running?)"))?;
    anyhow::ensure!(resp.status() == 200, "{uri} answered {}", resp.status());
    writeln!(out, "following {uri} (Ctrl-C to stop)")?;
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut summary = Summary::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(json) = line.strip_prefix("data: ") {
                    let r: Value = serde_json::from_str(json)?;
                    summary.add(&r);
                    writeln!(out, "{}", format_record(&r, color))?;
                    if summary.turns % 10 == 0 {
                        writeln!(out, "{}", summary.line())?;
                    }
                } else if let Some(comment) = line.strip_prefix(": dropped") {
                    writeln!(out, "-- dropped{comment}")?;
                } else if line == ": tether is shutting down" {
                    writeln!(out, "-- tether is shutting down")?;
                }
            }
        }
        out.flush()?;
    }
    writeln!(out, "{}", summary.line())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let cont = serde_json::json!({"session": 3, "plan": "continue", "items_in": 40, "items_up": 2,
            "bytes_in": 60000, "bytes_up": 3000, "ttfe_ms": 1.5, "total_ms": 20.0, "status": 200, "outcome": "completed"});
        let fresh = serde_json::json!({"session": null, "plan": "fresh", "reason": "diverged", "items_in": 41,
            "items_up": 41, "bytes_in": 61000, "bytes_up": 61000, "total_ms": 30.0, "status": 200,
            "outcome": "completed", "detail": "diverged at item 7"});
        let line = format_record(&cont, false);
        assert!(line.starts_with("s3") && line.contains("continue") && line.contains("2/40"), "{line}");
        assert!(!line.contains('\x1b'));
        let line = format_record(&fresh, true);
        assert!(line.contains("diverged at item 7") && line.contains("\x1b[33m"), "{line}");
        let mut s = Summary::default();
        s.add(&cont);
        s.add(&fresh);
        assert_eq!(s.line(), "-- 2 turns, 50% continued, 62 KB of 118 KB sent upstream (47% saved)");
    }
}

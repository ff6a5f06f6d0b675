//! tether's `/metrics` as the leak checks read it, and the wait for its
//! gauges to come to rest.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::common;
use super::{Check, DEADLINE, SETTLE};

/// tether's `/metrics`, parsed: unlabelled samples and recovery counters.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Scrape {
    pub(crate) in_flight: Option<i64>,
    pub(crate) client_connections: Option<i64>,
    pub(crate) tasks: Option<i64>,
    pub(crate) sockets: Option<i64>,
    pub(crate) sockets_busy: Option<i64>,
    pub(crate) sessions: Option<i64>,
    pub(crate) recoveries: BTreeSet<String>,
}

pub(crate) async fn scrape(url: &str) -> Check<Scrape> {
    let (status, body) = tokio::time::timeout(DEADLINE, common::get(url)).await.map_err(|_| "scrape hung")?;
    ensure!(status == 200, "/metrics answered {status}");
    let mut s = Scrape::default();
    for line in String::from_utf8_lossy(&body).lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let v = v as i64;
        match name {
            "tether_requests_in_flight" => s.in_flight = Some(v),
            "tether_client_connections_open" => s.client_connections = Some(v),
            "tether_runtime_tasks_alive" => s.tasks = Some(v),
            "tether_upstream_sockets_open" => s.sockets = Some(v),
            "tether_upstream_sockets_busy" => s.sockets_busy = Some(v),
            "tether_sessions_live" => s.sessions = Some(v),
            _ => {
                if let Some(kind) = name
                    .strip_prefix("tether_recoveries_total{kind=\"")
                    .and_then(|k| k.strip_suffix("\"}"))
                    .filter(|_| v > 0)
                {
                    s.recoveries.insert(kind.to_string());
                }
            }
        }
    }
    Ok(s)
}

/// Scrapes `url` every `every` until `done` holds for a scrape, which it
/// returns; after [`SETTLE`], `Err` holds the last scrape.
async fn poll(url: &str, every: Duration, done: impl Fn(&Scrape) -> bool) -> Check<Result<Scrape, Scrape>> {
    let until = Instant::now() + SETTLE;
    loop {
        let s = scrape(url).await?;
        if done(&s) {
            return Ok(Ok(s));
        }
        if Instant::now() >= until {
            return Ok(Err(s));
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `/metrics` until no upstream socket is busy: a socket whose client
/// hung up is drained (its response read to the end) before it serves again,
/// and the emulator counts a response completed when it sends the last frame,
/// before tether has read it. Fails after [`SETTLE`].
pub(crate) async fn drained(url: &str) -> Check {
    match poll(url, Duration::from_millis(5), |s| s.sockets_busy == Some(0)).await? {
        Ok(_) => Ok(()),
        Err(s) => Err(format!("a socket was still busy {SETTLE:?} after the hang-up: {s:?}")),
    }
}

/// The resting state tether must reach once no client is active.
#[derive(Debug)]
pub(crate) struct Rest {
    pub(crate) sockets: i64,
    pub(crate) sessions: i64,
    /// `None` while the baseline is being taken.
    pub(crate) tasks: Option<i64>,
}

/// Polls `/metrics` until the gauges rest at `want` (the scrape's own
/// connection and request are the only client activity), or fails after
/// [`SETTLE`] with the last values.
pub(crate) async fn settle(url: &str, want: &Rest) -> Check<Scrape> {
    let rests = |s: &Scrape| {
        s.in_flight == Some(1)
            && s.client_connections == Some(1)
            && s.sockets == Some(want.sockets)
            && s.sockets_busy == Some(0)
            && s.sessions == Some(want.sessions)
            && s.tasks.is_some()
            && want.tasks.is_none_or(|t| s.tasks == Some(t))
    };
    poll(url, Duration::from_millis(20), rests).await?.map_err(|s| {
        format!(
            "gauges did not rest within {SETTLE:?}: in flight {:?} (want 1: the scrape), client connections \
             {:?} (want 1: the scrape's), upstream sockets {:?} (want {}), busy {:?} (want 0), sessions {:?} (want {}), \
             runtime tasks {:?} (want {:?})",
            s.in_flight,
            s.client_connections,
            s.sockets,
            want.sockets,
            s.sockets_busy,
            s.sessions,
            want.sessions,
            s.tasks,
            want.tasks
        )
    })
}

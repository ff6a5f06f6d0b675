//! Prometheus metrics (`GET /metrics`), with every metric name in one place.
//!
//! Turn counters are fed from the per-turn [`TurnRecord`]; gauges of live
//! state (sockets, sessions) are read at scrape time.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::proxy::record::TurnRecord;
use crate::upstream::PoolStats;

/// Metric names (Prometheus appends `_total` to counters).
pub mod names {
    /// Turns by `plan` (continue, fresh, client_managed, http_fallback) and fresh `reason`.
    pub const REQUESTS: &str = "tether_requests";
    /// Body bytes received from clients on the managed path.
    pub const CLIENT_BYTES: &str = "tether_client_bytes";
    /// Bytes sent upstream on the managed path (whole frames or bodies).
    pub const UPSTREAM_BYTES: &str = "tether_upstream_bytes";
    /// Bytes not sent upstream thanks to continuations.
    pub const BYTES_SAVED: &str = "tether_bytes_saved";
    /// Recoveries taken, by `kind`.
    pub const RECOVERIES: &str = "tether_recoveries";
    /// Turns served over plain HTTP, by `reason`.
    pub const FALLBACKS: &str = "tether_http_fallbacks";
    /// Turns by terminal `outcome`.
    pub const OUTCOMES: &str = "tether_turn_outcomes";
    /// Upstream WebSocket connections open now.
    pub const SOCKETS_OPEN: &str = "tether_upstream_sockets_open";
    /// Upstream WebSocket connections serving a turn now (or draining one).
    pub const SOCKETS_BUSY: &str = "tether_upstream_sockets_busy";
    /// Upstream WebSocket connections opened since start.
    pub const SOCKETS_OPENED: &str = "tether_upstream_sockets_opened";
    /// Live sessions in the store.
    pub const SESSIONS_LIVE: &str = "tether_sessions_live";
    /// tether's own time per turn: request body in -> frame sent upstream (parse, plan, checkout, frame).
    pub const PREPARE_SECONDS: &str = "tether_prepare_seconds";
    /// Upstream time to first event.
    pub const UPSTREAM_TTFE_SECONDS: &str = "tether_upstream_ttfe_seconds";
    /// Client connections open now.
    pub const CONNECTIONS_OPEN: &str = "tether_client_connections_open";
    /// Client connections refused at `server.max_connections`.
    pub const CONNECTIONS_REFUSED: &str = "tether_client_connections_refused";
    /// Requests whose response is not finished yet (headers or body still going).
    pub const REQUESTS_IN_FLIGHT: &str = "tether_requests_in_flight";
    /// Tasks alive in tether's runtime (connections, sockets, drains, timers).
    pub const TASKS_ALIVE: &str = "tether_runtime_tasks_alive";
    /// Decision records dropped by slow `/debug/events` readers.
    pub const EVENTS_DROPPED: &str = "tether_debug_events_dropped";
}

/// Label sets are static strings in fixed-size arrays: counting a turn
/// allocates nothing.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels<2>, Counter>,
    client_bytes: Counter,
    upstream_bytes: Counter,
    bytes_saved: Counter,
    recoveries: Family<Labels<1>, Counter>,
    fallbacks: Family<Labels<1>, Counter>,
    outcomes: Family<Labels<1>, Counter>,
    sockets_open: Gauge,
    sockets_opened: Gauge,
    sockets_busy: Gauge,
    sessions_live: Gauge,
    tasks_alive: Gauge,
    /// Client connections open now (the accept loop holds a [`GaugeGuard`] per connection).
    pub connections_open: Gauge,
    /// Client connections refused at the limit.
    pub connections_refused: Counter,
    /// Requests whose response has not ended (a [`GaugeGuard`] rides in the body).
    pub requests_in_flight: Gauge,
    prepare: Histogram,
    ttfe: Histogram,
    /// Records dropped by slow debug readers.
    pub events_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn buckets(start: f64, factor: f64, n: u16) -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(start, factor, n))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            client_bytes: Counter::default(),
            upstream_bytes: Counter::default(),
            bytes_saved: Counter::default(),
            recoveries: Family::default(),
            fallbacks: Family::default(),
            outcomes: Family::default(),
            sockets_open: Gauge::default(),
            sockets_opened: Gauge::default(),
            sockets_busy: Gauge::default(),
            sessions_live: Gauge::default(),
            tasks_alive: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            requests_in_flight: Gauge::default(),
            prepare: buckets(10e-6, 2.0, 20),
            ttfe: buckets(100e-6, 2.0, 20),
            events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        use names::*;
        registry.register(REQUESTS, "Turns by plan and fresh reason", m.requests.clone());
        registry.register(CLIENT_BYTES, "Body bytes received from clients", m.client_bytes.clone());
        registry.register(UPSTREAM_BYTES, "Bytes sent upstream", m.upstream_bytes.clone());
        registry.register(
            BYTES_SAVED,
            "Bytes not sent upstream thanks to continuations",
            m.bytes_saved.clone(),
        );
        registry.register(RECOVERIES, "Recoveries taken by kind", m.recoveries.clone());
        registry.register(FALLBACKS, "Turns served over plain HTTP by reason", m.fallbacks.clone());
        registry.register(OUTCOMES, "Turns by terminal outcome", m.outcomes.clone());
        registry.register(SOCKETS_OPEN, "Upstream WebSocket connections open", m.sockets_open.clone());
        registry.register(
            SOCKETS_OPENED,
            "Upstream WebSocket connections opened since start",
            m.sockets_opened.clone(),
        );
        registry.register(
            SOCKETS_BUSY,
            "Upstream WebSocket connections serving a turn",
            m.sockets_busy.clone(),
        );
        registry.register(SESSIONS_LIVE, "Live sessions", m.sessions_live.clone());
        registry.register(CONNECTIONS_OPEN, "Client connections open", m.connections_open.clone());
        registry.register(
            CONNECTIONS_REFUSED,
            "Client connections refused at server.max_connections",
            m.connections_refused.clone(),
        );
        registry.register(REQUESTS_IN_FLIGHT, "Requests not finished yet", m.requests_in_flight.clone());
        registry.register(TASKS_ALIVE, "Tasks alive in tether's runtime", m.tasks_alive.clone());
        registry.register(PREPARE_SECONDS, "tether's own time: body in to frame sent", m.prepare.clone());
        registry.register(UPSTREAM_TTFE_SECONDS, "Upstream time to first event", m.ttfe.clone());
        registry.register(
            EVENTS_DROPPED,
            "Decision records dropped by slow readers",
            m.events_dropped.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one finished turn.
    pub fn observe(&self, r: &TurnRecord) {
        let reason = r.reason.unwrap_or("");
        self.requests.get_or_create(&[("plan", r.route.label()), ("reason", reason)]).inc();
        self.outcomes.get_or_create(&[("outcome", r.outcome)]).inc();
        self.client_bytes.inc_by(r.bytes_in as u64);
        self.upstream_bytes.inc_by(r.bytes_up as u64);
        if r.route == crate::proxy::record::Route::Continue {
            self.bytes_saved.inc_by(r.bytes_in.saturating_sub(r.bytes_up) as u64);
        }
        if r.route == crate::proxy::record::Route::HttpFallback {
            self.fallbacks.get_or_create(&[("reason", reason)]).inc();
        }
        for kind in &r.recoveries {
            self.recoveries.get_or_create(&[("kind", *kind)]).inc();
        }
        if let Some(p) = r.prepare {
            self.prepare.observe(p.as_secs_f64());
        }
        if let Some(t) = r.ttfe {
            self.ttfe.observe(t.as_secs_f64());
        }
    }

    /// The Prometheus text exposition, with live gauges set first.
    pub fn render(&self, pool: &PoolStats, sessions_live: usize) -> String {
        self.sockets_open.set(pool.open as i64);
        self.sockets_opened.set(pool.opened_total as i64);
        self.sockets_busy.set(pool.busy as i64);
        self.sessions_live.set(sessions_live as i64);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks_alive.set(rt.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Holds a gauge one higher for as long as it lives.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` now; decrements it on drop.
    pub fn new(gauge: &Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

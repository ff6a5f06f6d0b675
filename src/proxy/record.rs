//! The per-turn decision record: one log line per turn, and what
//! observability builds on. No content and no keys, ever.

use std::time::Duration;

/// How a turn was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A delta on the socket that holds the parent response.
    Continue,
    /// The full request over WebSocket mode.
    Fresh,
    /// The client chains by itself (`previous_response_id`): forwarded as is.
    ClientManaged,
    /// The full request over plain HTTPS (WebSocket refused, `background`, `conversation`).
    HttpFallback,
}

impl Route {
    /// Stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Continue => "continue",
            Route::Fresh => "fresh",
            Route::ClientManaged => "client_managed",
            Route::HttpFallback => "http_fallback",
        }
    }
}

/// Everything worth knowing about one turn.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    /// Session id, when the turn belongs to one (known after commit for fresh turns).
    pub session: Option<u64>,
    /// First 8 hex digits of the tenant hash.
    pub tenant: String,
    /// The whole tenant hash (never printed): scopes `/debug/events` readers.
    pub tenant_id: u128,
    /// How it was served.
    pub route: Route,
    /// Why it was not a continuation (label), when it was not.
    pub reason: Option<&'static str>,
    /// The reason in full, shown as its human detail (e.g. "diverged at item
    /// 7: function_call_output vs message"); formatted only when the record
    /// is logged or published.
    pub detail: Option<crate::session::FreshReason>,
    /// Items the client sent.
    pub items_in: usize,
    /// Items sent upstream.
    pub items_up: usize,
    /// Body bytes received from the client.
    pub bytes_in: usize,
    /// Frame bytes sent upstream.
    pub bytes_up: usize,
    /// Upstream socket id.
    pub socket: Option<u64>,
    /// Age of that socket when the turn took it.
    pub socket_age: Option<Duration>,
    /// Recoveries taken, in order (e.g. "previous_response_not_found->fresh").
    pub recoveries: Vec<&'static str>,
    /// tether's own time: request body received -> frame sent upstream.
    pub prepare: Option<Duration>,
    /// Time from sending upstream to the first upstream event.
    pub ttfe: Option<Duration>,
    /// Time from the request's arrival to the end of the answer.
    pub total: Duration,
    /// HTTP status given to the client.
    pub status: u16,
    /// Terminal outcome: completed, failed, incomplete, error, client_gone, upstream_lost.
    pub outcome: &'static str,
}

impl TurnRecord {
    /// The record as one JSON object (for `/debug/events`).
    pub fn to_json(&self) -> String {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        serde_json::json!({
            "session": self.session,
            "tenant": self.tenant,
            "plan": self.route.label(),
            "reason": self.reason,
            "detail": self.detail.map(|d| d.to_string()),
            "items_in": self.items_in,
            "items_up": self.items_up,
            "bytes_in": self.bytes_in,
            "bytes_up": self.bytes_up,
            "socket": self.socket,
            "socket_age_ms": self.socket_age.map(|d| d.as_millis() as u64),
            "recoveries": self.recoveries,
            "prepare_ms": ms(self.prepare),
            "ttfe_ms": ms(self.ttfe),
            "total_ms": self.total.as_secs_f64() * 1e3,
            "status": self.status,
            "outcome": self.outcome,
        })
        .to_string()
    }

    /// Logs, counts and publishes the record.
    pub fn emit(&self, app: &crate::App) {
        self.log();
        app.metrics.observe(self);
        app.events.publish(self.tenant_id, || self.to_json());
    }

    /// Writes the record as one `info` line.
    pub fn log(&self) {
        tracing::info!(
            target: "tether::turn",
            session = self.session,
            tenant = %self.tenant,
            plan = self.route.label(),
            reason = self.reason.unwrap_or(""),
            detail = %self.detail.map(|d| d.to_string()).unwrap_or_default(),
            items_in = self.items_in,
            items_up = self.items_up,
            bytes_in = self.bytes_in,
            bytes_up = self.bytes_up,
            socket = self.socket,
            socket_age_ms = self.socket_age.map(|d| d.as_millis() as u64),
            recoveries = %self.recoveries.join(","),
            prepare_us = self.prepare.map(|d| d.as_micros() as u64),
            ttfe_ms = self.ttfe.map(|d| d.as_secs_f64() * 1e3),
            total_ms = self.total.as_secs_f64() * 1e3,
            status = self.status,
            outcome = self.outcome,
            "turn"
        );
    }
}

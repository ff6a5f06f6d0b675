//! Fault injection: what can go wrong, its string syntax, and the queue.
//!
//! A fault is written `[http:|ws:]KIND[=ARGS]`; several faults in one
//! `metadata.emulator_fault` string are separated by `;`. Kinds:
//! - `drop_after=N`: drop the socket (no close frame; HTTP: cut the body)
//!   after N events of the response;
//! - `error_at=N:STATUS:CODE`: replace event N with an error (WS: the
//!   `{"type":"error","status",…}` frame; SSE: an `error` event; JSON: that
//!   status and body) and end the turn;
//! - `failed_at=N`: replace event N with `response.failed` (status `failed`,
//!   error `server_error`) and end the turn (JSON: a 500 error);
//! - `rate_limit`: answer 429 `rate_limit_exceeded` before any event;
//! - `evict`: forget the connection's latest response before the request
//!   (its continuation then gets `previous_response_not_found`);
//! - `slow=MS`: wait MS milliseconds before each event;
//! - `first_token=MS`: wait MS milliseconds before the first event that
//!   carries output tokens (a model's time to first token); the events
//!   before it (`response.created`, `response.in_progress`, the output
//!   item's head) go at once, as the service sends them;
//! - `refuse_upgrade=STATUS`: answer the next WebSocket upgrade with STATUS;
//! - `malformed_at=N`: send a frame that is not JSON before event N;
//! - `close=CODE[@N]`: send a close frame with CODE after N events (default 0);
//! - `no_pong`: at the request that carries it, the connection goes silent:
//!   it stops reading, so it answers no pings and no frames, until the peer
//!   gives up (or the connection's age limit passes).
//!
//! Each fault applies once: an injected fault is consumed by the next
//! request (or upgrade) of a matching transport.

use std::str::FromStr;
use std::time::Duration;

/// Which transport a queued fault waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultTarget {
    /// The next request on either transport.
    #[default]
    Any,
    /// The next plain HTTP request.
    Http,
    /// The next WebSocket request (or upgrade).
    Ws,
}

/// One fault and the transport it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which transport it waits for.
    pub target: FaultTarget,
    /// What goes wrong.
    pub kind: FaultKind,
}

/// What goes wrong; see the module docs for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Drop the socket after this many events.
    DropAfter(u32),
    /// An error (status, code) in place of event N.
    ErrorAt {
        /// Index of the replaced event.
        event: u32,
        /// HTTP status carried by the error.
        status: u16,
        /// The error `code`.
        code: String,
    },
    /// `response.failed` in place of event N.
    FailedAt(u32),
    /// 429 `rate_limit_exceeded` before any event.
    RateLimit,
    /// Forget the connection's latest response first.
    Evict,
    /// Delay before each event.
    Slow(Duration),
    /// Delay before the first event that carries output tokens.
    FirstToken(Duration),
    /// Answer the WebSocket upgrade with this status.
    RefuseUpgrade(u16),
    /// A non-JSON frame before event N.
    MalformedAt(u32),
    /// A close frame with this code after N events.
    Close {
        /// The close code.
        code: u16,
        /// Events sent before the close.
        after: u32,
    },
    /// Stop answering pings (and everything else).
    NoPong,
}

impl Fault {
    /// A fault for any transport.
    pub fn any(kind: FaultKind) -> Self {
        Fault { target: FaultTarget::Any, kind }
    }

    /// A fault for the next WebSocket request or upgrade.
    pub fn ws(kind: FaultKind) -> Self {
        Fault { target: FaultTarget::Ws, kind }
    }

    /// A fault for the next HTTP request.
    pub fn http(kind: FaultKind) -> Self {
        Fault { target: FaultTarget::Http, kind }
    }

    /// Parses `a;b;c` into faults.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, FaultError> {
        s.split(';').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect()
    }
}

/// A fault string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad emulator fault `{0}`")]
pub struct FaultError(pub String);

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FaultError(s.to_owned());
        let (target, rest) = match s.split_once(':') {
            Some(("http", rest)) => (FaultTarget::Http, rest),
            Some(("ws", rest)) => (FaultTarget::Ws, rest),
            _ => (FaultTarget::Any, s),
        };
        let (name, arg) = rest.split_once('=').unwrap_or((rest, ""));
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let status = |t: &str| t.trim().parse::<u16>().map_err(|_| bad());
        let kind = match name.trim() {
            "drop_after" => FaultKind::DropAfter(num(arg)?),
            "error_at" => {
                let mut parts = arg.splitn(3, ':');
                let event = num(parts.next().unwrap_or_default())?;
                let status = status(parts.next().ok_or_else(bad)?)?;
                let code = parts.next().filter(|c| !c.is_empty()).ok_or_else(bad)?.to_owned();
                FaultKind::ErrorAt { event, status, code }
            }
            "failed_at" => FaultKind::FailedAt(num(arg)?),
            "rate_limit" => FaultKind::RateLimit,
            "evict" => FaultKind::Evict,
            "slow" => FaultKind::Slow(Duration::from_millis(u64::from(num(arg)?))),
            "first_token" => FaultKind::FirstToken(Duration::from_millis(u64::from(num(arg)?))),
            "refuse_upgrade" => FaultKind::RefuseUpgrade(status(arg)?),
            "malformed_at" => FaultKind::MalformedAt(num(arg)?),
            "close" => {
                let (code, after) = arg.split_once('@').unwrap_or((arg, "0"));
                FaultKind::Close { code: status(code)?, after: num(after)? }
            }
            "no_pong" => FaultKind::NoPong,
            _ => return Err(bad()),
        };
        Ok(Fault { target, kind })
    }
}

/// The faults that shape one response, gathered from the queue and metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnFaults {
    pub drop_after: Option<u32>,
    pub error_at: Option<(u32, u16, String)>,
    pub failed_at: Option<u32>,
    pub rate_limit: bool,
    pub evict: bool,
    pub slow: Duration,
    pub first_token: Duration,
    pub malformed_at: Option<u32>,
    pub close: Option<(u16, u32)>,
    pub no_pong: bool,
}

impl TurnFaults {
    /// Adds one fault (upgrade refusals are not per-turn and are ignored here).
    pub fn add(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::DropAfter(n) => self.drop_after = Some(n),
            FaultKind::ErrorAt { event, status, code } => self.error_at = Some((event, status, code)),
            FaultKind::FailedAt(n) => self.failed_at = Some(n),
            FaultKind::RateLimit => self.rate_limit = true,
            FaultKind::Evict => self.evict = true,
            FaultKind::Slow(d) => self.slow = d,
            FaultKind::FirstToken(d) => self.first_token = d,
            FaultKind::MalformedAt(n) => self.malformed_at = Some(n),
            FaultKind::Close { code, after } => self.close = Some((code, after)),
            FaultKind::NoPong => self.no_pong = true,
            FaultKind::RefuseUpgrade(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let all = "drop_after=3; ws:error_at=2:500:server_error; http:rate_limit; evict; slow=5; \
                   refuse_upgrade=426; malformed_at=1; close=1011@2; close=1001; no_pong; failed_at=4; first_token=7";
        let faults = Fault::parse_list(all).expect("parse");
        assert_eq!(faults.len(), 12);
        assert_eq!(faults[10].kind, FaultKind::FailedAt(4));
        assert_eq!(faults[11].kind, FaultKind::FirstToken(Duration::from_millis(7)));
        assert_eq!(
            faults[1],
            Fault::ws(FaultKind::ErrorAt { event: 2, status: 500, code: "server_error".into() })
        );
        assert_eq!(faults[2], Fault::http(FaultKind::RateLimit));
        assert_eq!(faults[7].kind, FaultKind::Close { code: 1011, after: 2 });
        assert_eq!(faults[8].kind, FaultKind::Close { code: 1001, after: 0 });
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["explode", "drop_after=x", "error_at=1:500", "close=abc", "slow"] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}

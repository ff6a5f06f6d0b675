//! The matrix's table: the faults, the cells, and for each cell the outcome
//! the recovery table (docs/ARCHITECTURE.md §2, `src/proxy/turn.rs`) designs.

use super::SLOW_MS;

/// Where in the conversation the fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// Turn 1: nothing to continue yet.
    First,
    /// Turn 2: planned as a continuation of turn 1.
    Continuation,
}

/// One kind of fault, as the emulator provokes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    DropBeforeFirst,
    DropAfterFirst,
    CloseBeforeFirst,
    Error400,
    Error429,
    Error500,
    Error500AfterFirst,
    FailedMidResponse,
    Evict,
    AgeLimit,
    Refuse426,
    Refuse404,
    Refuse401,
    Malformed,
    MalformedAfterFirst,
    PingTimeout,
    Slow,
    ClientHangUp,
}

pub(crate) const KINDS: [Kind; 18] = [
    Kind::DropBeforeFirst,
    Kind::DropAfterFirst,
    Kind::CloseBeforeFirst,
    Kind::Error400,
    Kind::Error429,
    Kind::Error500,
    Kind::Error500AfterFirst,
    Kind::FailedMidResponse,
    Kind::Evict,
    Kind::AgeLimit,
    Kind::Refuse426,
    Kind::Refuse404,
    Kind::Refuse401,
    Kind::Malformed,
    Kind::MalformedAfterFirst,
    Kind::PingTimeout,
    Kind::Slow,
    Kind::ClientHangUp,
];

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cell {
    pub(crate) fault: Kind,
    pub(crate) stream: bool,
    pub(crate) position: Position,
}

/// What the client must get for the faulted turn.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 200 and the completed Response (JSON, or SSE ending in `response.completed`).
    Answer { route: &'static str },
    /// 200 SSE: events of the response, then the flat `error` event; never
    /// `response.completed` (two responses are never spliced into one).
    SseError { route: &'static str, code: &'static str },
    /// 200 SSE ending in the upstream's own `response.failed`, passed through.
    SseFailed { route: &'static str },
    /// That status with `{"error":{…}}`, as JSON even for `stream:true`.
    Error { status: u16, kind: &'static str, code: &'static str, route: Option<&'static str> },
    /// The client hangs up (after the first event, or before any answer for
    /// JSON); the upstream response is drained to its end.
    HungUp,
}

/// A step after the faulted turn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Then {
    /// A turn that must answer 200 over this route.
    Turn(&'static str),
    /// Let the HTTP fallback's cool-down pass.
    Cooldown,
}

/// The designed behaviour of one cell.
#[derive(Debug)]
pub(crate) struct Expect {
    pub(crate) outcome: Outcome,
    /// The recoveries tether must count (and no others).
    pub(crate) recoveries: &'static [&'static str],
    /// Whether the conversation's socket was replaced (emulator connections: 2, else 1).
    pub(crate) new_socket: bool,
    pub(crate) then: &'static [Then],
}

impl Expect {
    /// Tasks tether keeps beyond its baseline and the live socket's task:
    /// after turns over plain HTTP, the HTTP client's one idle keep-alive
    /// connection to the upstream and its pool's reaper (both end after 90 s
    /// idle; `src/upstream/http.rs`).
    pub(crate) fn http_pool_tasks(&self) -> i64 {
        match self.outcome {
            Outcome::Answer { route: "http_fallback" } => 2,
            _ => 0,
        }
    }
}

pub(crate) const CONTINUE: &[Then] = &[Then::Turn("continue"), Then::Turn("continue")];
pub(crate) const RETRY: &[Then] = &[Then::Turn("fresh"), Then::Turn("continue")];
pub(crate) const AFTER_COOLDOWN: &[Then] =
    &[Then::Turn("http_fallback"), Then::Cooldown, Then::Turn("fresh"), Then::Turn("continue")];

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::DropBeforeFirst => "drop_before_first_event",
            Kind::DropAfterFirst => "drop_after_first_event",
            Kind::CloseBeforeFirst => "close_1011_before_first_event",
            Kind::Error400 => "error_frame_400",
            Kind::Error429 => "error_frame_429",
            Kind::Error500 => "error_frame_500",
            Kind::Error500AfterFirst => "error_frame_500_after_first_event",
            Kind::FailedMidResponse => "response_failed_mid_response",
            Kind::Evict => "eviction",
            Kind::AgeLimit => "age_limit",
            Kind::Refuse426 => "upgrade_refused_426",
            Kind::Refuse404 => "upgrade_refused_404",
            Kind::Refuse401 => "upgrade_refused_401",
            Kind::Malformed => "malformed_frame_before_first_event",
            Kind::MalformedAfterFirst => "malformed_frame_after_first_event",
            Kind::PingTimeout => "ping_timeout",
            Kind::Slow => "slow_upstream",
            Kind::ClientHangUp => "client_hang_up",
        }
    }

    /// The faults queued before the faulted turn. A refused upgrade needs an
    /// upgrade: at a continuation the conversation's socket is dropped first,
    /// so the turn reconnects and meets the refusal.
    pub(crate) fn faults(self, position: Position) -> Vec<String> {
        let refuse = |status: u16| match position {
            Position::First => vec![format!("ws:refuse_upgrade={status}")],
            Position::Continuation => {
                vec!["ws:drop_after=0".to_string(), format!("ws:refuse_upgrade={status}")]
            }
        };
        let one = |s: &str| vec![s.to_string()];
        match self {
            Kind::DropBeforeFirst => one("ws:drop_after=0"),
            Kind::DropAfterFirst => one("ws:drop_after=3"),
            Kind::CloseBeforeFirst => one("ws:close=1011@0"),
            Kind::Error400 => one("ws:error_at=0:400:invalid_prompt"),
            Kind::Error429 => one("ws:rate_limit"),
            Kind::Error500 => one("ws:error_at=0:500:server_error"),
            Kind::Error500AfterFirst => one("ws:error_at=3:500:server_error"),
            Kind::FailedMidResponse => one("ws:failed_at=3"),
            Kind::Evict => one("ws:evict"),
            // What the service sends at its connection age limit (PROTOCOL.md §2).
            Kind::AgeLimit => one("ws:error_at=0:400:websocket_connection_limit_reached"),
            Kind::Refuse426 => refuse(426),
            Kind::Refuse404 => refuse(404),
            Kind::Refuse401 => refuse(401),
            Kind::Malformed => one("ws:malformed_at=0"),
            Kind::MalformedAfterFirst => one("ws:malformed_at=3"),
            Kind::PingTimeout => one("ws:no_pong"),
            Kind::Slow | Kind::ClientHangUp => vec![format!("ws:slow={SLOW_MS}")],
        }
    }
}

impl Cell {
    pub(crate) fn name(&self) -> String {
        let stream = if self.stream { "stream" } else { "json" };
        let position = match self.position {
            Position::First => "first",
            Position::Continuation => "continuation",
        };
        format!("{}/{stream}/{position}", self.fault.label())
    }

    /// The route a turn that is not recovered takes at this position.
    pub(crate) fn planned(&self) -> &'static str {
        match self.position {
            Position::First => "fresh",
            Position::Continuation => "continue",
        }
    }

    /// The designed outcome (docs/ARCHITECTURE.md §2 and `src/proxy/turn.rs`).
    pub(crate) fn expect(&self) -> Expect {
        let cont = self.position == Position::Continuation;
        let planned = self.planned();
        let answer = |recoveries, new_socket| Expect {
            outcome: Outcome::Answer { route: "fresh" },
            recoveries,
            new_socket,
            then: CONTINUE,
        };
        let error = |status, kind, code| Expect {
            outcome: Outcome::Error { status, kind, code, route: Some(planned) },
            recoveries: &[],
            new_socket: false,
            then: RETRY,
        };
        match self.fault {
            // Socket lost before any byte went downstream: new socket, fresh, once.
            Kind::DropBeforeFirst | Kind::CloseBeforeFirst => answer(&["socket_lost->fresh"], true),
            Kind::PingTimeout => answer(&["socket_lost->fresh"], true),
            // JSON clients have received nothing: the retry is still invisible.
            Kind::DropAfterFirst if !self.stream => answer(&["socket_lost->fresh"], true),
            // After bytes went out: an SSE `error` event; the session is evicted.
            Kind::DropAfterFirst => Expect {
                outcome: Outcome::SseError { route: planned, code: "upstream_error" },
                recoveries: &[],
                new_socket: true,
                then: RETRY,
            },
            Kind::Error400 => error(400, "invalid_request_error", "invalid_prompt"),
            Kind::Error429 => error(429, "rate_limit_error", "rate_limit_exceeded"),
            Kind::Error500 => error(500, "server_error", "server_error"),
            // After bytes went out, the error frame becomes the flat SSE `error` event.
            Kind::Error500AfterFirst if self.stream => Expect {
                outcome: Outcome::SseError { route: planned, code: "server_error" },
                recoveries: &[],
                new_socket: false,
                then: RETRY,
            },
            Kind::Error500AfterFirst => error(500, "server_error", "server_error"),
            Kind::FailedMidResponse if self.stream => Expect {
                outcome: Outcome::SseFailed { route: planned },
                recoveries: &[],
                new_socket: false,
                then: RETRY,
            },
            Kind::FailedMidResponse => error(500, "server_error", "server_error"),
            // `previous_response_not_found`: fresh on the same socket, once.
            Kind::Evict if cont => answer(&["previous_response_not_found->fresh"], false),
            // Nothing to evict yet: the turn is not even disturbed.
            Kind::Evict => answer(&[], false),
            Kind::AgeLimit => answer(&["connection_limit->fresh"], true),
            // A socket that sent garbage is not used again.
            Kind::Malformed => answer(&["malformed_frame->fresh"], true),
            Kind::MalformedAfterFirst if !self.stream => answer(&["malformed_frame->fresh"], true),
            Kind::MalformedAfterFirst => Expect {
                outcome: Outcome::SseError { route: planned, code: "upstream_error" },
                recoveries: &[],
                new_socket: true,
                then: RETRY,
            },
            Kind::Slow => Expect {
                outcome: Outcome::Answer { route: planned },
                recoveries: &[],
                new_socket: false,
                then: CONTINUE,
            },
            // The drained socket serves the client's retry, sent whole: the
            // response it holds never reached the client.
            Kind::ClientHangUp => {
                Expect { outcome: Outcome::HungUp, recoveries: &[], new_socket: false, then: RETRY }
            }
            // HTTP for the cool-down, then WebSocket mode again.
            Kind::Refuse426 | Kind::Refuse404 => Expect {
                outcome: Outcome::Answer { route: "http_fallback" },
                recoveries: if cont { &["socket_lost->fresh"] } else { &[] },
                new_socket: cont,
                then: AFTER_COOLDOWN,
            },
            // The upgrade's own status and body reach the client.
            Kind::Refuse401 => Expect {
                outcome: Outcome::Error {
                    status: 401,
                    kind: "authentication_error",
                    code: "upgrade_refused",
                    route: None,
                },
                recoveries: if cont { &["socket_lost->fresh"] } else { &[] },
                new_socket: cont,
                then: RETRY,
            },
        }
    }
}

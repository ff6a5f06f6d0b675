//! What the store decides for one request, and why.

use std::fmt;

use super::canon::ItemKind;

/// A live session (one conversation chain), unique for the store's lifetime.
pub type SessionId = u64;
/// An upstream socket, as numbered by its owner (the upstream pool).
pub type SocketId = u64;

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Send `input[delta_start..]` with `previous_response_id =
    /// parent_response_id` on `socket`.
    Continue {
        /// The session being continued; pass it to `commit`.
        session: SessionId,
        /// The response the socket holds as its latest.
        parent_response_id: String,
        /// Index of the first new item; always `< input.len()`.
        delta_start: usize,
        /// The socket that holds the parent.
        socket: SocketId,
    },
    /// Send the whole request.
    Fresh {
        /// Why the request cannot continue.
        reason: FreshReason,
    },
}

/// Why a request is sent in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshReason {
    /// The tenant has no live session.
    FirstTurn,
    /// The request has no items.
    EmptyInput,
    /// No prefix is a live tip, and no closer explanation was found.
    NoMatchingTip,
    /// The request shares `index` items with the nearest session of the same
    /// tenant, then differs (`ours` is the session's item, `theirs` the
    /// request's; `Missing` when one side ends there).
    DivergedAt {
        /// First differing item.
        index: usize,
        /// The session's item kind at `index`.
        ours: ItemKind,
        /// The request's item kind at `index`.
        theirs: ItemKind,
    },
    /// The parent's socket has moved on to another response.
    ParentNotLatest,
    /// The parent's socket is running another response (e.g. a fork).
    SocketBusy,
    /// The parent's socket is closed.
    SocketGone,
    /// The same history matches a session under another model.
    ModelChanged,
    /// The same history matches a session under another `store` flag.
    StoreChanged,
    /// The parent response did not complete (incomplete, failed).
    ParentNotCompleted,
    /// The session was evicted after a failure.
    Evicted,
    /// The session was dropped to stay within `SessionLimits::max`.
    CapacityEvicted,
    /// The session sat idle longer than `SessionLimits::ttl`.
    Expired,
    /// The whole request is a tip: there is no new item to send.
    EmptyDelta,
}

impl FreshReason {
    /// A stable snake_case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FreshReason::FirstTurn => "first_turn",
            FreshReason::EmptyInput => "empty_input",
            FreshReason::NoMatchingTip => "no_matching_tip",
            FreshReason::DivergedAt { .. } => "diverged",
            FreshReason::ParentNotLatest => "parent_not_latest",
            FreshReason::SocketBusy => "socket_busy",
            FreshReason::SocketGone => "socket_gone",
            FreshReason::ModelChanged => "model_changed",
            FreshReason::StoreChanged => "store_changed",
            FreshReason::ParentNotCompleted => "parent_not_completed",
            FreshReason::Evicted => "evicted",
            FreshReason::CapacityEvicted => "capacity_evicted",
            FreshReason::Expired => "expired",
            FreshReason::EmptyDelta => "empty_delta",
        }
    }
}

impl fmt::Display for FreshReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreshReason::DivergedAt { index, ours, theirs } => write!(
                f,
                "diverged from the nearest session at item {index} (session has {ours}, request has {theirs})"
            ),
            FreshReason::FirstTurn => f.write_str("first turn: no live session for this tenant"),
            FreshReason::EmptyInput => f.write_str("the request has no input items"),
            FreshReason::NoMatchingTip => f.write_str("no live session matches any prefix"),
            FreshReason::ParentNotLatest => {
                f.write_str("the parent is no longer the latest response on its socket")
            }
            FreshReason::SocketBusy => f.write_str("the parent's socket is busy"),
            FreshReason::SocketGone => f.write_str("the parent's socket is closed"),
            FreshReason::ModelChanged => f.write_str("same history, different model"),
            FreshReason::StoreChanged => f.write_str("same history, different store flag"),
            FreshReason::ParentNotCompleted => f.write_str("the parent response did not complete"),
            FreshReason::Evicted => f.write_str("the session was evicted after a failure"),
            FreshReason::CapacityEvicted => f.write_str("the session was dropped (store full)"),
            FreshReason::Expired => f.write_str("the session expired (idle too long)"),
            FreshReason::EmptyDelta => f.write_str("no new item after the matching tip"),
        }
    }
}

/// What the socket owner says about a socket at planning time. A socket whose
/// response has finished but is not yet committed must still be `Busy`:
/// `Idle` with another latest id retires the session that socket held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketStatus<'a> {
    /// Closed or unknown.
    Gone,
    /// Running (or queued for) a response.
    Busy,
    /// Open and idle, holding `latest_response_id` (if any) in its cache.
    Idle {
        /// The id of the last response the socket completed.
        latest_response_id: Option<&'a str>,
    },
}

/// The caller's view of its sockets; the store never does I/O itself.
pub trait SocketStates {
    /// The current status of `socket`.
    fn status(&self, socket: SocketId) -> SocketStatus<'_>;
}

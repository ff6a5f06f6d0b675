//! Upstream sockets: one task per WebSocket in Responses API "WebSocket
//! mode", the handshake, and the per-tenant pool that leases them out one turn
//! at a time.
//!
//! This module moves frames; it never decides delta vs fresh. The HTTP
//! pass-through and fallback client lives beside it ([`http`]).

mod connect;
mod error;
pub mod http;
mod lease;
mod pool;
mod shared;
mod socket;
#[cfg(test)]
mod socket_tests;

use std::time::Duration;

use ::http::HeaderValue;

pub use connect::connect;
pub use error::UpstreamError;
pub use lease::{Lease, TurnFrames};
pub use pool::{PoolStats, SocketSnapshot, UpstreamPool};
pub use shared::{Frame, Relay, SocketHandle};
pub use socket::spawn_socket;

/// Identifies one upstream socket for the life of the process.
pub type SocketId = u64;

/// The client credentials a socket is opened with. Never logged.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `Authorization` (usually `Bearer <key>`).
    pub authorization: Option<HeaderValue>,
    /// `OpenAI-Organization`.
    pub organization: Option<HeaderValue>,
    /// `OpenAI-Project`.
    pub project: Option<HeaderValue>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Settings for upstream WebSockets and their pool.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// `ws://` or `wss://…/v1/responses`.
    pub url: String,
    /// Deadline for TCP + TLS + upgrade.
    pub connect_timeout: Duration,
    /// An idle socket sends a ping this long after its last traffic (20 s).
    pub ping_interval: Duration,
    /// No pong (or any frame) this long after a ping: the socket is dead (60 s).
    pub pong_timeout: Duration,
    /// An idle socket is closed after this long without a turn.
    pub idle_timeout: Duration,
    /// Sockets older than this are rotated between turns (55 min).
    pub max_age: Duration,
    /// How long a socket keeps reading a response nobody awaits any more.
    pub drain_timeout: Duration,
    /// Open sockets per tenant.
    pub per_tenant: usize,
    /// Open sockets in total.
    pub total: usize,
    /// How long a checkout waits for a free slot before `PoolFull`.
    pub queue_timeout: Duration,
    /// Spare sockets kept open per tenant after its first use (0: none).
    pub spares_per_tenant: usize,
    /// Send `OpenAI-Beta: responses_websockets=2026-02-06` on the upgrade.
    pub beta_header: bool,
}

impl WsSettings {
    /// Defaults from PROTOCOL.md for the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(55 * 60),
            drain_timeout: Duration::from_secs(120),
            per_tenant: 16,
            total: 256,
            queue_timeout: Duration::from_secs(5),
            spares_per_tenant: 0,
            beta_header: true,
        }
    }
}

/// The first 8 hex digits of a tenant hash, for logs.
pub(crate) fn tenant_short(tenant: u128) -> String {
    format!("{:08x}", (tenant >> 96) as u32)
}

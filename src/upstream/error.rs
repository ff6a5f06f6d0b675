//! The upstream boundary's error: which side failed, whether output had
//! already reached the client, and what the proxy may do about it.

use bytes::Bytes;

/// Why an upstream socket could not serve a turn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The upgrade was answered with a non-101 status (401/403: pass the
    /// status and body through; 404/426: fall back to HTTP).
    #[error("upstream refused the WebSocket upgrade with HTTP {status}")]
    Handshake {
        /// The HTTP status.
        status: u16,
        /// The response body, when any.
        body: Bytes,
    },
    /// TCP, TLS or the upgrade itself failed or timed out.
    #[error("cannot connect upstream: {0}")]
    Connect(String),
    /// The server closed the socket (or it dropped) during or before a turn.
    #[error("upstream socket closed (code {code:?})")]
    Closed {
        /// The close code, `None` for an abrupt drop (1006).
        code: Option<u16>,
        /// Whether frames of the current turn were already delivered.
        after_output: bool,
    },
    /// No pong within `pong_timeout` after a ping.
    #[error("upstream socket stopped answering pings")]
    PingTimeout {
        /// Whether frames of the current turn were already delivered.
        after_output: bool,
    },
    /// The service answered `websocket_connection_limit_reached`: the socket
    /// is spent; open a new one.
    #[error("upstream connection reached its age limit")]
    ConnectionLimit {
        /// Whether frames of the current turn were already delivered.
        after_output: bool,
    },
    /// No socket slot freed within `queue_timeout`.
    #[error("upstream socket pool is full")]
    PoolFull,
    /// The preferred socket is serving another turn.
    #[error("the preferred upstream socket is busy")]
    Busy,
    /// The preferred socket no longer exists.
    #[error("the preferred upstream socket is gone")]
    Gone,
    /// The server sent something WebSocket mode does not allow, or a drain
    /// ran past its deadline.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Whether the turn may be retried invisibly on another socket (the
    /// caller still checks that no byte went downstream).
    pub fn retryable_before_output(&self) -> bool {
        match self {
            Self::Closed { after_output, .. }
            | Self::PingTimeout { after_output }
            | Self::ConnectionLimit { after_output } => !after_output,
            Self::Connect(_) | Self::Busy | Self::Gone => true,
            Self::Handshake { .. } | Self::PoolFull | Self::Protocol(_) => false,
        }
    }

    /// Whether the upstream lacks WebSocket mode (upgrade answered 404 or
    /// 426) or cannot be reached: serve over HTTP instead, when enabled.
    /// `PoolFull` is left to the caller's configuration.
    pub fn wants_http_fallback(&self) -> bool {
        match self {
            Self::Handshake { status, .. } => matches!(status, 404 | 426),
            Self::Connect(_) => true,
            _ => false,
        }
    }

    /// The same error, noting that output had been delivered.
    pub(crate) fn with_after_output(self, delivered: bool) -> Self {
        match self {
            Self::Closed { code, after_output } => {
                Self::Closed { code, after_output: after_output || delivered }
            }
            Self::PingTimeout { after_output } => {
                Self::PingTimeout { after_output: after_output || delivered }
            }
            Self::ConnectionLimit { after_output } => {
                Self::ConnectionLimit { after_output: after_output || delivered }
            }
            other => other,
        }
    }
}

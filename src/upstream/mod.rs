//! Upstream: the HTTP client (pass-through, fallback) and WebSocket sockets.
pub mod http;

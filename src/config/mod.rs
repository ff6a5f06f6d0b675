//! The validated configuration.
//!
//! Configuration is parsed once, from `config.toml` (or built-in defaults that
//! equal the repository's `config.toml`), then `TETHER_<SECTION>_<KEY>`
//! environment variables, then CLI flags. The result is a set of plain typed
//! structs: nothing downstream re-parses or re-validates. Every bad or unknown
//! field is reported at once, by name (see [`load`]).

mod load;

pub use load::{ConfigError, FieldError, Overrides, from_toml_str, load};

use std::net::SocketAddr;
use std::time::Duration;

/// Environment variable prefix for overrides: `TETHER_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "TETHER_";
/// Environment variable naming the config file when `--config` is absent.
pub const ENV_CONFIG_PATH: &str = "TETHER_CONFIG";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`: the downstream listener.
    pub server: ServerConfig,
    /// `[upstream]`: where requests go.
    pub upstream: UpstreamConfig,
    /// `[pool]`: upstream WebSocket pool limits and timers.
    pub pool: PoolConfig,
    /// `[sessions]`: the conversation store.
    pub sessions: SessionsConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Allow a non-loopback listen address.
    pub allow_remote: bool,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Time allowed for a request's headers, from its first byte; and for a
    /// new connection's first byte.
    pub header_read_timeout: Duration,
    /// A connection (HTTP/1.1 keep-alive or h2c) with no request in
    /// progress and none begun for this long is closed.
    pub keepalive_timeout: Duration,
    /// Time allowed to receive a managed request's whole body (408 beyond).
    pub body_read_timeout: Duration,
    /// Largest request head (request line + headers); 431 beyond.
    pub max_header_bytes: usize,
    /// Client connections served at once; beyond, new ones get 503 and are closed.
    pub max_connections: usize,
    /// Time allowed for a whole pass-through request before the upstream answers.
    pub request_timeout: Duration,
    /// Time open requests and streams get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Serve `/debug/*` and `/metrics` to non-loopback peers too.
    pub debug_remote: bool,
    /// Runtime threads: 0 = one per CPU core, 1 = everything on one thread.
    pub worker_threads: usize,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// HTTPS base URL of the API, ending in `/v1`.
    pub base_url: String,
    /// WebSocket URL of `/responses`; derived from `base_url` when unset.
    pub ws_url: String,
    /// Name of the env var holding a key used only when a client sends none.
    pub api_key_env: String,
    /// TCP + TLS + upgrade deadline.
    pub connect_timeout: Duration,
    /// Serve over plain HTTPS when WebSocket mode is refused (404/426).
    pub fallback_http: bool,
    /// How long to stay on HTTP after a refusal before trying WebSocket again.
    pub fallback_cooldown: Duration,
    /// Send `OpenAI-Beta: responses_websockets=2026-02-06` on the upgrade.
    pub beta_header: bool,
}

/// `[pool]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Upstream sockets per tenant.
    pub per_tenant: usize,
    /// Upstream sockets in total.
    pub total: usize,
    /// How long a request waits for a socket when the pool is full.
    pub queue_timeout: Duration,
    /// Idle spare sockets kept open per tenant after first use.
    pub spares_per_tenant: usize,
    /// Ping interval while a socket is idle.
    pub ping_interval: Duration,
    /// A socket without a pong for this long is dead.
    pub pong_timeout: Duration,
    /// Close a socket idle for this long.
    pub idle_timeout: Duration,
    /// Rotate a socket (between turns) once it is this old.
    pub max_age: Duration,
    /// After a client hang-up, how long to drain the upstream response.
    pub drain_timeout: Duration,
}

/// `[sessions]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsConfig {
    /// Live sessions kept (LRU beyond).
    pub max: usize,
    /// Idle time after which a session is no longer continued.
    pub ttl: Duration,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Default filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub level: String,
    /// Log conversation content (keys stay redacted). Off by default.
    pub content: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
                allow_remote: false,
                max_body_bytes: 32 * 1024 * 1024,
                header_read_timeout: Duration::from_secs(10),
                keepalive_timeout: Duration::from_secs(120),
                body_read_timeout: Duration::from_secs(60),
                max_header_bytes: 64 * 1024,
                max_connections: 4096,
                request_timeout: Duration::from_secs(600),
                shutdown_grace: Duration::from_secs(30),
                debug_remote: false,
                worker_threads: 1,
            },
            upstream: UpstreamConfig {
                base_url: "https://api.openai.com/v1".into(),
                ws_url: String::new(),
                api_key_env: "OPENAI_API_KEY".into(),
                connect_timeout: Duration::from_secs(10),
                fallback_http: true,
                fallback_cooldown: Duration::from_secs(300),
                beta_header: true,
            },
            pool: PoolConfig {
                per_tenant: 64,
                total: 1024,
                queue_timeout: Duration::from_secs(5),
                spares_per_tenant: 1,
                ping_interval: Duration::from_secs(20),
                pong_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(600),
                max_age: Duration::from_secs(55 * 60),
                drain_timeout: Duration::from_secs(120),
            },
            sessions: SessionsConfig { max: 10_000, ttl: Duration::from_secs(30 * 60) },
            log: LogConfig { format: LogFormat::Plain, level: "info".into(), content: false },
        }
        .with_derived()
    }
}

impl Config {
    /// Fills derived values: the WebSocket URL from the base URL when unset.
    pub fn with_derived(mut self) -> Self {
        if self.upstream.ws_url.is_empty() {
            self.upstream.ws_url = derive_ws_url(&self.upstream.base_url);
        }
        self
    }
}

/// `https://host/v1` -> `wss://host/v1/responses` (and `http` -> `ws`).
pub fn derive_ws_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{rest}/responses")
}

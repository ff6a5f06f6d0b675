//! tether: a local sidecar for the OpenAI Responses API.
//!
//! Agent apps make ordinary stateless `POST /v1/responses` calls, each one
//! carrying the whole conversation. tether recognises which conversation a call
//! continues, keeps one long-lived upstream WebSocket per live conversation, and
//! sends upstream only what is new since the last turn. See
//! `docs/ARCHITECTURE.md` for the design.
//!
//! Module map:
//! - [`config`]: the validated configuration (file, env, CLI).
//! - [`http`]: the downstream transport (accept loop, routes, bodies).
//! - [`proxy`]: the request pipeline for `POST /v1/responses`.
//! - [`session`]: pure fingerprinting and the session store (delta vs fresh).
//! - [`translate`]: pure translation of upstream frames to SSE or JSON.
//! - [`upstream`]: upstream sockets, the pool and the HTTP client.
//! - [`emulator`]: an in-process stand-in for the real service.
//!
//! The entry point is [`serve`]: it takes its listener and shutdown future
//! from the caller, so tests bind `127.0.0.1:0` and stop it cleanly.

pub mod agent;
pub mod cli;
pub mod config;
pub mod demo;
pub mod emulator;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod session;
pub mod shutdown;
pub mod tail;
pub mod telemetry;
pub mod translate;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use config::Config;
use upstream::http::HttpUpstream;

/// Sleeps until `at`, or forever when there is no deadline: a `select!`
/// branch for a timer that may be off (socket keepalive and drain, a client
/// connection's idle limit).
pub(crate) async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The upstream HTTP client (pass-through and fallback).
    pub http: HttpUpstream,
    /// The managed path's sessions and sockets.
    pub managed: proxy::Managed,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The live decision stream.
    pub events: events::Events,
}

impl App {
    /// Builds the shared state. Reads the fallback API key from the env var
    /// named by `upstream.api_key_env` (the key itself is never in the file).
    pub fn new(config: Config) -> App {
        let api_key = std::env::var(&config.upstream.api_key_env).ok().filter(|k| !k.is_empty());
        let http = HttpUpstream::new(
            &config.upstream.base_url,
            api_key,
            config.upstream.connect_timeout,
            config.server.request_timeout,
            config.server.max_body_bytes,
        );
        let managed = proxy::Managed::new(&config);
        App { config, http, managed, metrics: Arc::default(), events: events::Events::default() }
    }

    /// Called once the listener is closed.
    pub fn begin_shutdown(&self) {
        self.managed.begin_shutdown();
        self.events.close();
    }

    /// Called after the connections are drained: closes upstream sockets
    /// with a normal close code.
    pub async fn finish_shutdown(&self) {
        self.managed.pool.close_all().await;
    }
}

/// Serves tether on `listener` until `shutdown` resolves, then drains open
/// requests and streams for up to `server.shutdown_grace`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let app = Arc::new(App::new(config));
    http::server::run(app, listener, shutdown).await;
}

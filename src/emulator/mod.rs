//! The upstream emulator: an in-process stand-in for the OpenAI Responses
//! API over HTTP (JSON and SSE) and WebSocket mode, used by every test,
//! benchmark and the demo (DESIGN.md §7).
//!
//! [`spawn`] binds a listener and returns its address and an
//! [`EmulatorHandle`] for the oracle records, stats, fault injection and
//! shutdown. The model is scripted and deterministic ([`Script`]), delays
//! come from a [`CostModel`], faults are described in [`fault`], and the
//! oracle's own notion of equal contexts lives in [`oracle`].
//!
//! Routes: `POST /v1/responses` (JSON or SSE), a WebSocket upgrade on
//! `GET /v1/responses`, `GET /v1/responses/{id}` (stored responses),
//! `GET /v1/models`, `GET /_emulator/contexts`, `GET /_emulator/stats`.

mod config;
mod cost;
mod error;
mod events;
pub mod fault;
mod http;
mod model;
pub mod oracle;
mod script;
mod server;
mod state;
mod steps;
mod turn;
mod validate;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::{ConfigError, EmulatorConfig, WsMode};
pub use cost::{CostModel, profile, tokens};
pub use error::ApiError;
pub use fault::{Fault, FaultKind, FaultTarget};
pub use script::{Script, ScriptError};
pub use state::{ContextRecord, Stats, Transport};

/// Binds `config.listen` and serves the emulator until [`EmulatorHandle::shutdown`].
pub async fn spawn(config: EmulatorConfig) -> std::io::Result<(SocketAddr, EmulatorHandle)> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(state::Shared::new(config));
    tokio::spawn(server::serve(listener, shared.clone()));
    Ok((addr, EmulatorHandle { shared }))
}

/// A handle on a running emulator; clones share it.
#[derive(Clone)]
pub struct EmulatorHandle {
    shared: Arc<state::Shared>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle").finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The oracle's records, one per response, in creation order.
    pub fn contexts(&self) -> Vec<ContextRecord> {
        self.shared.records()
    }

    /// Takes the oracle's records so far, leaving none: long runs check
    /// them as they go instead of holding every context until the end.
    pub fn take_contexts(&self) -> Vec<ContextRecord> {
        self.shared.take_records()
    }

    /// Counters since start or the last [`reset`](Self::reset).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Queues a fault for the next matching request (or upgrade).
    pub fn inject(&self, fault: Fault) {
        self.shared.inject(fault);
    }

    /// Clears the oracle records and the stats.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, closes WebSockets (1001) and ends connections.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// The configuration the emulator runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }
}

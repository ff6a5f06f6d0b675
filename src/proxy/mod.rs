//! The managed path: `POST /v1/responses`, as one pipeline of named phases:
//!
//! ```text
//! parse -> classify -> plan -> checkout -> send -> translate -> commit
//! ```
//!
//! `parse` and the frame building live in [`request`]; `plan` is the pure
//! [`crate::session`] store; `checkout`/`send` use [`crate::upstream`];
//! `translate` is the pure [`crate::translate`]; the phases from checkout on,
//! with the recovery rules of docs/ARCHITECTURE.md §2, are in [`turn`].
//! This module decides the route and owns the shared state.

pub mod fallback;
pub mod record;
pub mod request;
pub mod turn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderMap, Request, Response, header};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use crate::App;
use crate::config::Config;
use crate::error::ProxyError;
use crate::http::body::{self, Body};
use crate::session::{
    self, ChainSeed, FreshReason, ItemMemo, Plan, SessionLimits, SessionStore, SocketId, SocketStates,
    SocketStatus, TenantId,
};
use crate::upstream::{Credentials, SocketSnapshot, UpstreamPool, WsSettings};
use request::ParsedRequest;

/// State of the managed path, shared by all requests.
pub struct Managed {
    /// The conversation store (pure; short critical sections only).
    pub sessions: Mutex<SessionStore>,
    /// Upstream WebSocket sockets.
    pub pool: UpstreamPool,
    /// Canonical hashes of the item texts seen lately (per tenant).
    pub memo: Mutex<ItemMemo>,
    salt: [u8; 16],
    fallback_until: Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed").finish_non_exhaustive()
    }
}

impl Managed {
    /// Builds the store and the pool from the config. The tenant salt is
    /// random per process, so tenant hashes mean nothing outside it.
    pub fn new(config: &Config) -> Managed {
        let limits = SessionLimits { max: config.sessions.max, ttl: config.sessions.ttl };
        let p = &config.pool;
        let settings = WsSettings {
            url: config.upstream.ws_url.clone(),
            connect_timeout: config.upstream.connect_timeout,
            ping_interval: p.ping_interval,
            pong_timeout: p.pong_timeout,
            idle_timeout: p.idle_timeout,
            max_age: p.max_age,
            drain_timeout: p.drain_timeout,
            per_tenant: p.per_tenant,
            total: p.total,
            queue_timeout: p.queue_timeout,
            spares_per_tenant: p.spares_per_tenant,
            beta_header: config.upstream.beta_header,
        };
        Managed {
            sessions: Mutex::new(SessionStore::new(limits)),
            memo: Mutex::new(ItemMemo::default()),
            pool: UpstreamPool::new(settings),
            salt: random_salt(),
            fallback_until: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The tenant of a request: a salted hash of its credentials.
    pub fn tenant(&self, creds: &Credentials) -> TenantId {
        let bytes = |v: &Option<http::HeaderValue>| v.as_ref().map(|v| v.as_bytes().to_vec());
        TenantId::derive(
            &self.salt,
            bytes(&creds.authorization).as_deref(),
            bytes(&creds.organization).as_deref(),
            bytes(&creds.project).as_deref(),
        )
    }

    /// True while WebSocket mode is in its cool-down after a refusal.
    pub fn fallback_active(&self) -> bool {
        let guard = self.fallback_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|until| Instant::now() < until)
    }

    /// Starts (or extends) the HTTP cool-down.
    pub fn start_fallback(&self, cooldown: std::time::Duration) {
        let mut guard = self.fallback_until.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Instant::now() + cooldown);
        tracing::warn!(?cooldown, "upstream refused WebSocket mode; serving over HTTP for the cool-down");
    }

    /// New turns stop being planned; open ones finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The store, locked (a poisoned lock is still usable: the store has no
    /// invariants a panic between statements could break). When the guard
    /// goes, the pool learns which sockets the store's changes left holding
    /// a response no session continues from.
    pub fn store(&self) -> StoreGuard<'_> {
        StoreGuard { store: self.sessions.lock().unwrap_or_else(|p| p.into_inner()), pool: &self.pool }
    }
}

/// The locked session store (see [`Managed::store`]).
pub struct StoreGuard<'a> {
    store: std::sync::MutexGuard<'a, SessionStore>,
    pool: &'a UpstreamPool,
}

impl std::ops::Deref for StoreGuard<'_> {
    type Target = SessionStore;
    fn deref(&self) -> &SessionStore {
        &self.store
    }
}

impl std::ops::DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut SessionStore {
        &mut self.store
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        for (socket, response_id) in self.store.take_orphans() {
            self.pool.orphan(socket, &response_id);
        }
    }
}

fn random_salt() -> [u8; 16] {
    // Per-process randomness without another dependency: std's SipHash keys
    // are randomly seeded per process.
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// The credentials a request carries; the configured key only when it has none.
pub fn credentials(headers: &HeaderMap, default_auth: Option<&http::HeaderValue>) -> Credentials {
    let get = |name: &str| headers.get(name).cloned();
    Credentials {
        authorization: get(header::AUTHORIZATION.as_str()).or_else(|| default_auth.cloned()),
        organization: get("openai-organization"),
        project: get("openai-project"),
    }
}

/// Serves `POST /v1/responses`.
pub async fn responses(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
    let started = Instant::now();
    // parse
    let (parts, incoming) = req.into_parts();
    let server = &app.config.server;
    let bytes =
        tokio::time::timeout(server.body_read_timeout, body::read_limited(incoming, server.max_body_bytes))
            .await
            .map_err(|_| ProxyError::BodyTimeout(server.body_read_timeout))??;
    let received = Instant::now();
    let parsed = ParsedRequest::parse(&bytes)?;
    // classify
    let m = &app.managed;
    let creds = credentials(&parts.headers, app.http.default_auth());
    let tenant = m.tenant(&creds);
    let http_reason = if parsed.background {
        Some("background")
    } else if parsed.conversation {
        Some("conversation")
    } else if m.fallback_active() {
        Some("websocket_refused")
    } else {
        None
    };
    let mut turn =
        turn::Turn::new(app, bytes.clone(), &parsed, &parts.headers, creds, tenant, (started, received));
    if let Some(reason) = http_reason {
        return turn.http_fallback(reason).await;
    }
    if let Some(prev) = &parsed.previous_response_id {
        let socket = TenantSockets::of(&m.pool, tenant).holding(prev);
        turn.client_managed(socket);
        return turn.run(None).await;
    }
    // plan
    let seed = ChainSeed { tenant, model: parsed.model.as_deref().unwrap_or(""), store: parsed.store };
    let fp = fingerprint_input(&seed, &parsed, &m.memo);
    let plan = match &fp {
        Some(fp) => {
            let view = TenantSockets::of(&m.pool, tenant);
            m.store().plan(fp, Instant::now(), &view)
        }
        None => Plan::Fresh { reason: FreshReason::NoMatchingTip },
    };
    turn.set_plan(&plan, fp.is_none());
    turn.run(fp).await
}

/// The chain over the request's items (a string input is one user message).
/// `None` when an item cannot be hashed: then the turn is sent whole.
fn fingerprint_input(
    seed: &ChainSeed<'_>,
    parsed: &ParsedRequest<'_>,
    memo: &Mutex<ItemMemo>,
) -> Option<session::Fingerprint> {
    match (&parsed.items, &parsed.text) {
        (Some(items), _) => session::fingerprint_memo(seed, items, memo).ok(),
        (None, Some(text)) => {
            let content = serde_json::to_string(text).ok()?;
            let item = RawValue::from_string(format!(r#"{{"role":"user","content":{content}}}"#)).ok()?;
            session::fingerprint(seed, &[&*item]).ok()
        }
        (None, None) => None,
    }
}

/// One tenant's sockets as the session store sees them. The store asks for
/// one socket per plan (the one holding the session's latest response), so
/// that socket alone is looked up, once, when asked: the cost does not grow
/// with the number of sockets open.
pub struct TenantSockets<'p> {
    pool: &'p UpstreamPool,
    tenant: TenantId,
    one: std::cell::OnceCell<(SocketId, SocketSnapshot)>,
    all: std::cell::OnceCell<Vec<(SocketId, SocketSnapshot)>>,
}

impl<'p> TenantSockets<'p> {
    /// `tenant`'s sockets in `pool`, looked up when asked.
    pub fn of(pool: &'p UpstreamPool, tenant: TenantId) -> TenantSockets<'p> {
        TenantSockets { pool, tenant, one: Default::default(), all: Default::default() }
    }

    fn all(&self) -> &[(SocketId, SocketSnapshot)] {
        self.all.get_or_init(|| self.pool.tenant_sockets(self.tenant.0))
    }

    /// An idle socket whose latest response is `response_id`.
    pub fn holding(&self, response_id: &str) -> Option<SocketId> {
        self.all().iter().find_map(|(id, s)| match s {
            SocketSnapshot::Idle { latest_response_id: Some(r), .. } if r == response_id => Some(*id),
            _ => None,
        })
    }

    fn snapshot(&self, socket: SocketId) -> Option<&SocketSnapshot> {
        let (id, snap) = self.one.get_or_init(|| (socket, self.pool.socket_snapshot(self.tenant.0, socket)));
        if *id == socket {
            Some(snap)
        } else {
            self.all().iter().find(|(id, _)| *id == socket).map(|(_, s)| s)
        }
    }
}

impl SocketStates for TenantSockets<'_> {
    fn status(&self, socket: SocketId) -> SocketStatus<'_> {
        match self.snapshot(socket) {
            Some(SocketSnapshot::Idle { latest_response_id, .. }) => {
                SocketStatus::Idle { latest_response_id: latest_response_id.as_deref() }
            }
            Some(SocketSnapshot::Busy) => SocketStatus::Busy,
            Some(SocketSnapshot::Gone) | None => SocketStatus::Gone,
        }
    }
}

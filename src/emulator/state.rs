//! State shared by every connection: oracle records, stats, the store of
//! `store:true` responses, the prefix cache and the fault queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use super::config::EmulatorConfig;
use super::fault::{Fault, FaultKind, FaultTarget};

/// The transport a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain HTTP `POST /v1/responses`.
    Http,
    /// A `response.create` frame in WebSocket mode.
    Ws,
}

/// What the oracle recorded for one response: the full context it reconstructed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextRecord {
    /// The response's id.
    pub response_id: String,
    /// The transport of the request.
    pub transport: Transport,
    /// The parent the request named, if any.
    pub previous_response_id: Option<String>,
    /// The request's `instructions`, if any.
    pub instructions: Option<String>,
    /// Parent chain (input ++ output of every ancestor) followed by this input.
    pub context: Vec<Value>,
}

/// Counters since start (or the last `reset`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// `POST /v1/responses` requests.
    pub requests_http: u64,
    /// `response.create` frames.
    pub requests_ws: u64,
    /// Requests that continued a parent (`previous_response_id` resolved).
    pub continuations: u64,
    /// Requests without a parent.
    pub fresh: u64,
    /// Request bytes (HTTP bodies and whole WebSocket frames).
    pub bytes_received: u64,
    /// Requests answered with an error (validation, faults, age limit, …).
    pub errors: u64,
    /// WebSocket connections accepted.
    pub ws_connections: u64,
    /// HTTP request body bytes.
    pub bytes_received_http: u64,
    /// WebSocket request frame bytes.
    pub bytes_received_ws: u64,
    /// Bytes of `input` alone, both transports.
    pub input_bytes_received: u64,
    /// Sum of `usage.input_tokens` over responses.
    pub input_tokens: u64,
    /// Sum of `usage.input_tokens_details.cached_tokens` over responses.
    pub cached_tokens: u64,
    /// Sum of `usage.output_tokens` over responses.
    pub output_tokens: u64,
    /// Responses that completed.
    pub completed: u64,
    /// Faults that were applied.
    pub faults_applied: u64,
}

/// A completed response the emulator can continue from.
#[derive(Debug)]
pub(crate) struct Held {
    pub id: String,
    /// Input ++ output of the whole chain.
    pub context: Vec<Value>,
    /// Hash of the settings rendered before the items (instructions, tools).
    pub prompt: u128,
    /// Estimated tokens of the settings and `context`.
    pub tokens: u64,
    /// The final Response object (served by `GET /v1/responses/{id}`).
    pub response: Value,
}

const PREFIX_CACHE_ENTRIES: usize = 16_384;
const STORE_ENTRIES: usize = 16_384;

#[derive(Default)]
struct Inner {
    records: Vec<ContextRecord>,
    stats: Stats,
    store: HashMap<String, Arc<Held>>,
    store_order: VecDeque<String>,
    prefixes: HashSet<u128>,
    prefix_order: VecDeque<u128>,
    faults: VecDeque<Fault>,
}

/// The emulator's shared state.
pub(crate) struct Shared {
    pub config: EmulatorConfig,
    inner: Mutex<Inner>,
    nonce: u64,
    next_id: AtomicU64,
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub fn new(config: EmulatorConfig) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Shared {
            config,
            inner: Mutex::default(),
            nonce: xxh3_128(&nanos.to_le_bytes()) as u64,
            next_id: AtomicU64::new(1),
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh unique id with the given prefix (`resp`, `msg`, `fc`).
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}_{:016x}{n:08x}", self.nonce)
    }

    pub fn records(&self) -> Vec<ContextRecord> {
        self.lock().records.clone()
    }

    pub fn take_records(&self) -> Vec<ContextRecord> {
        std::mem::take(&mut self.lock().records)
    }

    /// Keeps the oracle record `record` builds, when records are kept (a
    /// record copies the whole context: not built when they are off).
    pub fn record(&self, record: impl FnOnce() -> ContextRecord) {
        if self.config.record_contexts {
            let record = record();
            self.lock().records.push(record);
        }
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub fn with_stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.lock().stats);
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.records.clear();
        inner.stats = Stats::default();
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Takes the oldest queued per-turn fault for this transport (each fault
    /// applies once, to one request).
    pub fn take_fault(&self, transport: Transport) -> Option<FaultKind> {
        let mut inner = self.lock();
        let pos = inner.faults.iter().position(|f| {
            matches_target(f.target, transport) && !matches!(f.kind, FaultKind::RefuseUpgrade(_))
        })?;
        inner.faults.remove(pos).map(|f| f.kind)
    }

    /// Takes a queued upgrade refusal, if any.
    pub fn take_refusal(&self) -> Option<u16> {
        let mut inner = self.lock();
        let pos = inner
            .faults
            .iter()
            .position(|f| f.target != FaultTarget::Http && matches!(f.kind, FaultKind::RefuseUpgrade(_)))?;
        match inner.faults.remove(pos).map(|f| f.kind) {
            Some(FaultKind::RefuseUpgrade(status)) => Some(status),
            _ => None,
        }
    }

    pub fn stored(&self, id: &str) -> Option<Arc<Held>> {
        self.lock().store.get(id).cloned()
    }

    pub fn store(&self, held: Arc<Held>) {
        let mut inner = self.lock();
        if inner.store.insert(held.id.clone(), held.clone()).is_none() {
            inner.store_order.push_back(held.id.clone());
        }
        while inner.store_order.len() > STORE_ENTRIES {
            if let Some(old) = inner.store_order.pop_front() {
                inner.store.remove(&old);
            }
        }
    }

    /// Remembers every prefix of a completed prompt (`seed` hashes its settings).
    /// `normal`: the prompt's items in normal form, serialised.
    pub fn remember_prefixes(&self, seed: u128, normal: &[String]) {
        let hashes = prefix_hashes(seed, normal);
        let mut inner = self.lock();
        for h in hashes {
            if inner.prefixes.insert(h) {
                inner.prefix_order.push_back(h);
            }
        }
        while inner.prefix_order.len() > PREFIX_CACHE_ENTRIES {
            if let Some(old) = inner.prefix_order.pop_front() {
                inner.prefixes.remove(&old);
            }
        }
    }

    /// Items in the longest remembered proper prefix of the prompt: `Some(0)`
    /// when only the settings are known, `None` when nothing is.
    pub fn longest_prefix(&self, seed: u128, normal: &[String]) -> Option<usize> {
        let hashes = prefix_hashes(seed, normal);
        let inner = self.lock();
        hashes.iter().take(normal.len()).rposition(|h| inner.prefixes.contains(h))
    }
}

fn matches_target(target: FaultTarget, transport: Transport) -> bool {
    matches!(
        (target, transport),
        (FaultTarget::Any, _) | (FaultTarget::Http, Transport::Http) | (FaultTarget::Ws, Transport::Ws)
    )
}

/// Chained hashes of each prefix (0..=len items) of a prompt, in normal form.
fn prefix_hashes(seed: u128, normal: &[String]) -> Vec<u128> {
    let mut h = seed;
    let mut out = Vec::with_capacity(normal.len() + 1);
    out.push(seed);
    for item in normal {
        let mut bytes = Vec::with_capacity(16 + item.len());
        bytes.extend_from_slice(&h.to_le_bytes());
        bytes.extend_from_slice(item.as_bytes());
        h = xxh3_128(&bytes);
        out.push(h);
    }
    out
}

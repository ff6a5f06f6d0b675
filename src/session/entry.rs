//! One live session as the store keeps it: hashes, counters and a short
//! diagnostic trail, never content; and what `/debug/sessions` shows of it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use super::canon::ItemKind;
use super::fingerprint::Fingerprint;
use super::plan::{SessionId, SocketId};
use super::tenant::TenantId;

/// Items per session whose kind and short hash are kept for diagnostics.
pub const DIAG_ITEMS: usize = 1024;

/// One item of a session's diagnostic trail: a short hash and the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiagItem {
    pub(super) hash: u32,
    pub(super) kind: ItemKind,
}

/// One live conversation chain. Hashes and counters only, never content.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) tenant: TenantId,
    pub(super) model: u64,
    pub(super) store: bool,
    pub(super) tip: u128,
    pub(super) content_tip: u128,
    pub(super) items: usize,
    pub(super) response_id: Box<str>,
    pub(super) socket: SocketId,
    pub(super) created: Instant,
    pub(super) last_used: Instant,
    pub(super) turns: u64,
    pub(super) continues: u64,
    pub(super) fresh: u64,
    pub(super) bytes_saved: u64,
    pub(super) diag: Box<[DiagItem]>,
}

impl Session {
    /// The session's item kind at `i`, `Missing` past its end.
    pub(super) fn kind(&self, i: usize) -> Option<ItemKind> {
        match self.diag.get(i) {
            Some(d) => Some(d.kind),
            None if i >= self.items => Some(ItemKind::Missing),
            None => None,
        }
    }

    pub(super) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Session>()
            + self.response_id.len()
            + self.diag.len() * std::mem::size_of::<DiagItem>()
            + INDEX_OVERHEAD
    }

    /// What `/debug/sessions` shows for this session.
    pub(super) fn info(&self, id: SessionId, now: Instant) -> SessionInfo {
        SessionInfo {
            id,
            tenant: self.tenant.short(),
            tenant_id: self.tenant.0,
            items: self.items,
            turns: self.turns,
            continues: self.continues,
            fresh: self.fresh,
            bytes_saved: self.bytes_saved,
            socket: self.socket,
            store: self.store,
            age_ms: millis(now.saturating_duration_since(self.created)),
            idle_ms: millis(now.saturating_duration_since(self.last_used)),
            approx_bytes: self.approx_bytes(),
        }
    }
}

/// Bytes per session spent in the LRU node and the tip, socket and tenant
/// indexes (a conservative estimate).
const INDEX_OVERHEAD: usize = 160;

/// Hashes 128-bit tips by folding them: they are already uniform (and seeded
/// by a salted tenant, so clients cannot aim collisions).
#[derive(Default)]
pub(super) struct TipHasher(u64);

impl Hasher for TipHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

pub(super) type TipMap<V> = HashMap<u128, V, BuildHasherDefault<TipHasher>>;

/// What `/debug/sessions` shows about one session: no content, no keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: SessionId,
    /// The tenant's short hash.
    pub tenant: String,
    /// The whole tenant hash (not shown): scopes `/debug/sessions` readers.
    #[serde(skip)]
    pub tenant_id: u128,
    /// Items in the chain (input ++ output of the latest response).
    pub items: usize,
    /// Turns recorded with `record_turn`.
    pub turns: u64,
    /// Of which continued (delta sent).
    pub continues: u64,
    /// Of which fresh (full request sent).
    pub fresh: u64,
    /// Request bytes not sent upstream thanks to continuation.
    pub bytes_saved: u64,
    /// The socket holding the latest response.
    pub socket: SocketId,
    /// The `store` flag of the chain.
    pub store: bool,
    /// Milliseconds since the session started.
    pub age_ms: u64,
    /// Milliseconds since it was last used.
    pub idle_ms: u64,
    /// Approximate memory held for the session.
    pub approx_bytes: usize,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn diag_of(fp: &Fingerprint) -> Box<[DiagItem]> {
    (0..fp.len().min(DIAG_ITEMS))
        .map(|i| DiagItem { hash: fp.short_hash(i).unwrap_or(0), kind: fp.kind(i) })
        .collect()
}

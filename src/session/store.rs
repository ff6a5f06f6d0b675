//! The session store: live tips, their sockets, and the plan for a request.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::diag::Tombstones;
use super::entry::{Session, SessionInfo, TipMap, diag_of};
use super::fingerprint::Fingerprint;
use super::plan::{FreshReason, Plan, SessionId, SocketId, SocketStates, SocketStatus};
use super::tenant::TenantId;

/// Recent sessions per tenant considered when explaining a miss.
pub(super) const TENANT_RECENT: usize = 16;

/// Orphaned sockets noted and not yet taken, at most.
const MAX_ORPHANS: usize = 1024;

/// Bounds of the store (config `sessions.max`, `sessions.ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Live sessions kept; the least recently used is dropped beyond this.
    pub max: usize,
    /// Idle time after which a session is no longer continued.
    pub ttl: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max: 10_000, ttl: Duration::from_secs(30 * 60) }
    }
}

/// Maps tips of live conversations to sessions and plans each request.
pub struct SessionStore {
    pub(super) limits: SessionLimits,
    pub(super) next_id: SessionId,
    pub(super) sessions: LruCache<SessionId, Session>,
    pub(super) tips: TipMap<SessionId>,
    pub(super) by_socket: HashMap<SocketId, SessionId>,
    pub(super) by_tenant: HashMap<TenantId, VecDeque<SessionId>>,
    pub(super) tombs: Tombstones,
    /// Sockets whose latest response no live session continues any more
    /// (its session was retired or evicted), with that response's id:
    /// until the caller takes them ([`SessionStore::take_orphans`]).
    orphans: Vec<(SocketId, Box<str>)>,
}

impl SessionStore {
    /// An empty store with the given bounds.
    pub fn new(limits: SessionLimits) -> Self {
        let cap = NonZeroUsize::new(limits.max).unwrap_or(NonZeroUsize::MIN);
        SessionStore {
            limits,
            next_id: 1,
            sessions: LruCache::new(cap),
            tips: TipMap::default(),
            by_socket: HashMap::new(),
            by_tenant: HashMap::new(),
            tombs: Tombstones::default(),
            orphans: Vec::new(),
        }
    }

    /// Plans a request whose `input` fingerprints to `fp`: the longest prefix
    /// that is a live tip continues if its response is still the latest on an
    /// idle socket and at least one item follows it; otherwise fresh, with the
    /// most specific reason found.
    pub fn plan(&mut self, fp: &Fingerprint, now: Instant, sockets: &impl SocketStates) -> Plan {
        self.sweep(now);
        let m = fp.len();
        if m == 0 {
            return fresh(FreshReason::EmptyInput);
        }
        for k in (1..=m).rev() {
            let Some(&id) = self.tips.get(&fp.chain_at(k)) else {
                continue;
            };
            let Some(s) = self.sessions.peek(&id) else {
                continue;
            };
            // Defence in depth: a 128-bit collision would need these to agree too.
            if s.items != k || s.tenant != fp.tenant() {
                continue;
            }
            if k == m {
                return fresh(FreshReason::EmptyDelta);
            }
            return self.plan_from(id, k, now, sockets);
        }
        fresh(self.diagnose(fp))
    }

    fn plan_from(&mut self, id: SessionId, k: usize, now: Instant, sockets: &impl SocketStates) -> Plan {
        let Some(s) = self.sessions.get_mut(&id) else {
            return fresh(FreshReason::NoMatchingTip);
        };
        // The sweep relies on LRU order; callers' clocks may not be monotonic.
        let reason = match sockets.status(s.socket) {
            _ if now.saturating_duration_since(s.last_used) > self.limits.ttl => FreshReason::Expired,
            SocketStatus::Busy => return fresh(FreshReason::SocketBusy),
            SocketStatus::Gone => FreshReason::SocketGone,
            SocketStatus::Idle { latest_response_id: Some(latest) } if latest == &*s.response_id => {
                s.last_used = now;
                return Plan::Continue {
                    session: id,
                    parent_response_id: s.response_id.to_string(),
                    delta_start: k,
                    socket: s.socket,
                };
            }
            SocketStatus::Idle { .. } => FreshReason::ParentNotLatest,
        };
        self.retire(id, reason);
        fresh(reason)
    }

    /// Records a completed response: `fp` is the chain over its input ++
    /// output. A continued turn (`session` live, and `fp` extends its tip)
    /// advances that session, and its old tip stops being a tip; otherwise a
    /// new session starts. Any other session whose response this supersedes
    /// (same socket, or same tip) is retired.
    pub fn commit(
        &mut self,
        session: Option<SessionId>,
        fp: &Fingerprint,
        response_id: &str,
        socket: SocketId,
        now: Instant,
    ) -> SessionId {
        self.sweep(now);
        let tip = fp.tip();
        let advancing = session.filter(|id| {
            self.sessions.peek(id).is_some_and(|s| s.items <= fp.len() && fp.chain_at(s.items) == s.tip)
        });
        let others = [self.tips.get(&tip).copied(), self.by_socket.get(&socket).copied()];
        for other in others {
            if let Some(other) = other
                && Some(other) != advancing
            {
                self.retire(other, FreshReason::ParentNotLatest);
            }
        }
        // The socket now holds this response: it is no orphan.
        self.orphans.retain(|(s, _)| *s != socket);
        let diag = diag_of(fp);
        if let Some(id) = advancing
            && let Some(s) = self.sessions.get_mut(&id)
        {
            let (old_tip, old_socket, old_response) = (s.tip, s.socket, std::mem::take(&mut s.response_id));
            s.tip = tip;
            s.content_tip = fp.content_at(fp.len());
            s.items = fp.len();
            s.model = fp.model_hash();
            s.store = fp.store();
            s.response_id = response_id.into();
            s.socket = socket;
            s.last_used = now;
            s.diag = diag;
            if old_tip != tip {
                self.tips.remove(&old_tip);
                self.tombs.insert(old_tip, FreshReason::ParentNotLatest);
            }
            if old_socket != socket && self.by_socket.get(&old_socket) == Some(&id) {
                self.by_socket.remove(&old_socket);
                self.orphan(old_socket, old_response);
            }
            self.tips.insert(tip, id);
            self.by_socket.insert(socket, id);
            self.touch_tenant(fp.tenant(), id);
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        let s = Session {
            tenant: fp.tenant(),
            model: fp.model_hash(),
            store: fp.store(),
            tip,
            content_tip: fp.content_at(fp.len()),
            items: fp.len(),
            response_id: response_id.into(),
            socket,
            created: now,
            last_used: now,
            turns: 0,
            continues: 0,
            fresh: 0,
            bytes_saved: 0,
            diag,
        };
        if let Some((old_id, old)) = self.sessions.push(id, s) {
            self.tombs.insert(old.tip, FreshReason::CapacityEvicted);
            self.unindex(old_id, old);
        }
        self.tips.insert(tip, id);
        self.by_socket.insert(socket, id);
        self.touch_tenant(fp.tenant(), id);
        id
    }

    /// After a failure: the session's parent is gone; its next turn is fresh
    /// (reason `Evicted`).
    pub fn evict(&mut self, session: SessionId) {
        self.retire(session, FreshReason::Evicted);
    }

    /// After a response that did not complete (`incomplete`, `failed`):
    /// `fp` is its input ++ partial output. A request echoing it is fresh
    /// (`ParentNotCompleted`); the socket no longer holds a usable parent.
    pub fn record_incomplete(&mut self, session: Option<SessionId>, fp: &Fingerprint, socket: SocketId) {
        if let Some(id) = session {
            self.retire(id, FreshReason::ParentNotLatest);
        }
        if let Some(&id) = self.by_socket.get(&socket) {
            self.retire(id, FreshReason::ParentNotLatest);
        }
        self.tombs.insert(fp.tip(), FreshReason::ParentNotCompleted);
    }

    /// The socket closed: the session it held can no longer continue.
    pub fn forget_socket(&mut self, socket: SocketId) {
        if let Some(&id) = self.by_socket.get(&socket) {
            self.retire(id, FreshReason::SocketGone);
        }
    }

    /// Counts one turn of `session` for `/debug/sessions`.
    pub fn record_turn(&mut self, session: SessionId, continued: bool, bytes_saved: u64) {
        if let Some(s) = self.sessions.peek_mut(&session) {
            s.turns += 1;
            if continued {
                s.continues += 1;
            } else {
                s.fresh += 1;
            }
            s.bytes_saved = s.bytes_saved.saturating_add(bytes_saved);
        }
    }

    /// Every live session, most recently used first.
    pub fn snapshot(&self, now: Instant) -> Vec<SessionInfo> {
        self.sessions.iter().map(|(&id, s)| s.info(id, now)).collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there is no live session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Approximate bytes held by the store (sessions, indexes, tombstones).
    pub fn approx_memory_bytes(&self) -> usize {
        let sessions: usize = self.sessions.iter().map(|(_, s)| s.approx_bytes()).sum();
        sessions + self.tombs.approx_bytes() + self.by_tenant.len() * (64 + TENANT_RECENT * 8)
    }

    /// Drops a session, remembering why in a tombstone.
    pub(super) fn retire(&mut self, id: SessionId, reason: FreshReason) {
        if let Some(s) = self.sessions.pop(&id) {
            self.tombs.insert(s.tip, reason);
            self.unindex(id, s);
        }
    }

    fn unindex(&mut self, id: SessionId, s: Session) {
        if self.tips.get(&s.tip) == Some(&id) {
            self.tips.remove(&s.tip);
        }
        if self.by_socket.get(&s.socket) == Some(&id) {
            self.by_socket.remove(&s.socket);
            self.orphan(s.socket, s.response_id);
        }
    }

    /// Notes that `socket`'s latest response (`response_id`) lost its
    /// session. Bounded: past [`MAX_ORPHANS`] untaken, the note is dropped
    /// (a missed reuse, nothing worse).
    fn orphan(&mut self, socket: SocketId, response_id: Box<str>) {
        if self.orphans.len() < MAX_ORPHANS {
            self.orphans.push((socket, response_id));
        }
    }

    /// The sockets whose latest response, as far as the store knew, no
    /// session continues any more since the last call (each with that
    /// response's id; the socket may have served another turn since, so
    /// the id is what to check). The pool reuses such a socket for a
    /// fresh turn before it opens a new one or takes one that a live
    /// session still needs.
    pub fn take_orphans(&mut self) -> impl Iterator<Item = (SocketId, Box<str>)> + '_ {
        self.orphans.drain(..)
    }

    /// Retires sessions idle longer than the TTL (they sit at the LRU end).
    fn sweep(&mut self, now: Instant) {
        while let Some((&id, s)) = self.sessions.peek_lru() {
            if now.saturating_duration_since(s.last_used) <= self.limits.ttl {
                break;
            }
            self.retire(id, FreshReason::Expired);
        }
    }

    fn touch_tenant(&mut self, tenant: TenantId, id: SessionId) {
        let sessions = &self.sessions;
        let q = self.by_tenant.entry(tenant).or_default();
        q.retain(|&x| x != id && sessions.contains(&x));
        q.push_front(id);
        q.truncate(TENANT_RECENT);
        if self.by_tenant.len() > self.limits.max.max(16) {
            self.by_tenant.retain(|_, q| {
                q.retain(|x| sessions.contains(x));
                !q.is_empty()
            });
        }
    }
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("limits", &self.limits)
            .field("sessions", &self.sessions.len())
            .field("tips", &self.tips.len())
            .finish_non_exhaustive()
    }
}

fn fresh(reason: FreshReason) -> Plan {
    Plan::Fresh { reason }
}

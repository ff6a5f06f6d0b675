//! The pool of upstream sockets: per-tenant, bounded per tenant and in total,
//! leased one turn at a time, rotated before `max_age`.
//!
//! A socket never serves another tenant. An idle socket whose cache is empty
//! is preferred over one holding some session's latest response, so checkouts
//! without a preference do not wipe a live session's warm state while there is
//! room to open a new socket.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::shared::{Freed, SocketHandle, State};
use super::{Credentials, Lease, SocketId, UpstreamError, WsSettings, connect, spawn_socket, tenant_short};

/// What the session store may learn about a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSnapshot {
    /// Closed, dead or unknown.
    Gone,
    /// Leased or finishing a response.
    Busy,
    /// Free to lease.
    Idle {
        /// The latest completed response it holds.
        latest_response_id: Option<String>,
        /// Age of the connection.
        age: Duration,
    },
}

/// Pool counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sockets open now.
    pub open: usize,
    /// Sockets opened since start.
    pub opened_total: u64,
    /// Open sockets serving a turn now (leased, or still receiving or draining a response).
    pub busy: usize,
    /// Open sockets per tenant hash.
    pub per_tenant: HashMap<u128, usize>,
}

/// Upstream WebSocket pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UpstreamPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: WsSettings,
    state: Mutex<PoolState>,
    /// Woken when a socket is released, ends a turn or dies.
    notify: Arc<Notify>,
    /// The sockets that became idle or died since a checkout last looked.
    freed: Freed,
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
    opened_total: AtomicU64,
}

#[derive(Debug, Default)]
struct PoolState {
    sockets: HashMap<SocketId, Entry>,
    /// Sockets per tenant in `sockets`.
    counts: HashMap<u128, usize>,
    /// Per tenant, the sockets that became idle with an empty cache (`cold`)
    /// or holding a response (`warm`), in the order they did, each with the
    /// time it did: an entry whose socket has been leased (or died) since is
    /// stale and skipped. A fresh checkout takes from their fronts instead
    /// of looking at every socket.
    cold: HashMap<u128, VecDeque<Freeing>>,
    warm: HashMap<u128, VecDeque<Freeing>>,
    /// Handshakes in progress per tenant: they hold a slot.
    connecting: HashMap<u128, usize>,
    /// `absorb`'s buffer, swapped with the shared list so neither one is
    /// reallocated at every turn.
    absorbing: Vec<SocketId>,
    closed: bool,
}

/// A socket and when it became idle.
type Freeing = (SocketId, Option<std::time::Instant>);

/// Where an entry of a cold or warm queue stands.
enum Queued<'a> {
    /// Its socket is still idle since it was queued.
    Idle(&'a SocketHandle),
    /// Its socket is dead, or idle past `max_age`: to be closed.
    Spent,
    /// Its socket was leased since, or is gone: skip it.
    Stale,
}

#[derive(Debug)]
struct Entry {
    handle: SocketHandle,
    join: JoinHandle<()>,
}

/// What a fresh checkout counts of one tenant's sockets.
#[derive(Debug)]
struct Survey {
    /// The tenant's sockets, handshakes under way included.
    mine: usize,
    /// All sockets, handshakes under way included.
    total: usize,
    /// The tenant's idle sockets with an empty cache (spares included).
    cold_count: usize,
}

/// What one look at the pool decided.
enum Pick {
    Lease(Lease),
    Open(Reservation),
    Wait,
}

/// A slot held for a handshake in progress. If the handshake's future is
/// dropped (the client hung up mid-handshake), dropping this gives the slot
/// back; otherwise [`UpstreamPool::open`] releases it under the same lock
/// that adds the new socket.
struct Reservation {
    pool: UpstreamPool,
    tenant: u128,
    held: bool,
}

impl Reservation {
    /// Counts a handshake for `tenant` in `st` and returns its slot.
    fn take(pool: &UpstreamPool, st: &mut PoolState, tenant: u128) -> Reservation {
        *st.connecting.entry(tenant).or_default() += 1;
        Reservation { pool: pool.clone(), tenant, held: true }
    }

    fn release(&mut self, st: &mut PoolState) {
        if std::mem::take(&mut self.held) {
            st.unreserve(self.tenant);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.pool.lock().unreserve(self.tenant);
            self.pool.inner.notify.notify_waiters();
        }
    }
}

impl PoolState {
    /// One pass over every socket: forgets dead ones, closes idle ones past
    /// `max_age` (dropping the pool's handle ends an idle task with a normal
    /// close), and counts the busy ones kept.
    fn sweep(&mut self, max_age: Duration) -> usize {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut busy = 0;
        self.sockets.retain(|_, e| {
            let s = e.handle.shared.lock();
            let keep = !spent(e, &s, now, max_age);
            if keep {
                busy += usize::from(s.busy());
            } else {
                gone.push(e.handle.shared.tenant);
            }
            keep
        });
        for tenant in gone {
            self.uncount(tenant);
        }
        busy
    }

    fn insert(&mut self, id: SocketId, entry: Entry) {
        *self.counts.entry(entry.handle.shared.tenant).or_default() += 1;
        self.sockets.insert(id, entry);
    }

    /// Forgets socket `id` (an idle one closes once its handle is dropped).
    fn remove(&mut self, id: SocketId) -> Option<Entry> {
        let e = self.sockets.remove(&id)?;
        self.uncount(e.handle.shared.tenant);
        Some(e)
    }

    fn uncount(&mut self, tenant: u128) {
        if let Some(n) = self.counts.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.counts.remove(&tenant);
                self.cold.remove(&tenant);
                self.warm.remove(&tenant);
            }
        }
    }

    /// Where a queue entry stands: its socket still idle since `since`,
    /// spent (dead, or idle past `max_age`), or leased or gone since.
    fn queued(&self, (id, since): Freeing, now: Instant, max_age: Duration) -> Queued<'_> {
        let Some(e) = self.sockets.get(&id) else { return Queued::Stale };
        let s = e.handle.shared.lock();
        if spent(e, &s, now, max_age) {
            Queued::Spent
        } else if s.busy() || s.idle_since != since {
            Queued::Stale
        } else {
            Queued::Idle(&e.handle)
        }
    }

    /// Whether a queue entry's socket is still idle since it was queued.
    fn still_idle(&self, f: Freeing, now: Instant, max_age: Duration) -> bool {
        matches!(self.queued(f, now, max_age), Queued::Idle(_))
    }

    /// The tenants' queues of sockets with an empty cache (`cold`), or of the others.
    fn queues(&mut self, cold: bool) -> &mut HashMap<u128, VecDeque<Freeing>> {
        if cold { &mut self.cold } else { &mut self.warm }
    }

    /// Reads the sockets that became idle or died since the last look into
    /// the tenants' queues (the dead are forgotten). A queue grown well past
    /// its tenant's socket count (continuations free their sockets too) is
    /// compacted to its live entries.
    fn absorb(&mut self, freed: &Freed, max_age: Duration) {
        let mut ids = std::mem::take(&mut self.absorbing);
        std::mem::swap(&mut ids, &mut *freed.lock().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        for id in ids.drain(..) {
            let Some(e) = self.sockets.get(&id) else { continue };
            let tenant = e.handle.shared.tenant;
            let (spent, idle) = {
                let s = e.handle.shared.lock();
                (spent(e, &s, now, max_age), (!s.busy()).then(|| (!s.holds_session(), s.idle_since)))
            };
            if spent {
                self.remove(id);
                continue;
            }
            let Some((cold, since)) = idle else { continue };
            self.enqueue(cold, tenant, (id, since), now, max_age);
        }
        self.absorbing = ids;
    }

    /// Queues an idle socket at the back of its tenant's cold or warm queue;
    /// a queue grown well past the tenant's socket count is compacted to its
    /// live entries.
    fn enqueue(&mut self, cold: bool, tenant: u128, f: Freeing, now: Instant, max_age: Duration) {
        let limit = 2 * self.counts.get(&tenant).copied().unwrap_or(0) + 8;
        let q = self.queues(cold).entry(tenant).or_default();
        q.push_back(f);
        if q.len() > limit {
            let mut q = std::mem::take(q);
            q.retain(|f| self.still_idle(*f, now, max_age));
            self.queues(cold).insert(tenant, q);
        }
    }

    /// Leases the tenant's socket idle the longest from its cold or warm
    /// queue, skipping stale entries (sockets past `max_age` are closed).
    fn take(&mut self, tenant: u128, cold: bool, max_age: Duration) -> Option<Lease> {
        let now = Instant::now();
        let mut aged = Vec::new();
        let mut found = None;
        let mut q = std::mem::take(self.queues(cold).get_mut(&tenant)?);
        while let Some(f) = q.pop_front() {
            match self.queued(f, now, max_age) {
                Queued::Stale => {}
                Queued::Spent => aged.push(f.0),
                Queued::Idle(handle) => {
                    if handle.shared.try_lease().is_ok() {
                        found = Some(Lease::new(handle.clone(), false));
                        break;
                    }
                }
            }
        }
        self.queues(cold).insert(tenant, q);
        for id in aged {
            self.remove(id);
        }
        found
    }

    /// How many live entries the tenant's cold queue holds.
    fn cold_count(&self, tenant: u128, max_age: Duration) -> usize {
        let now = Instant::now();
        self.cold.get(&tenant).map_or(0, |q| q.iter().filter(|f| self.still_idle(**f, now, max_age)).count())
    }

    /// `mine` and `total` plus the handshakes under way (for `tenant`, and in all).
    fn with_connecting(&self, tenant: Option<u128>, mine: usize, total: usize) -> (usize, usize) {
        let connecting: usize = self.connecting.values().sum();
        let own = tenant.and_then(|t| self.connecting.get(&t)).copied().unwrap_or(0);
        (mine + own, total + connecting)
    }

    fn unreserve(&mut self, tenant: u128) {
        if let Some(n) = self.connecting.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.connecting.remove(&tenant);
            }
        }
    }
}

impl UpstreamPool {
    /// An empty pool.
    pub fn new(settings: WsSettings) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(PoolState::default()),
                notify: Arc::new(Notify::new()),
                freed: Freed::default(),
                shutdown,
                next_id: AtomicU64::new(1),
                opened_total: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A socket for `tenant`. With `prefer`, that socket or
    /// `Err(Busy | Gone)`; without, an idle socket of this tenant (one with an
    /// empty cache first), else a new one within limits, else any idle one,
    /// else wait up to `queue_timeout` for `Err(PoolFull)`.
    pub async fn checkout(
        &self,
        tenant: u128,
        creds: &Credentials,
        prefer: Option<SocketId>,
    ) -> Result<Lease, UpstreamError> {
        match prefer {
            // A continuation uses no spare: nothing to top up.
            Some(id) => self.checkout_preferred(tenant, id),
            None => self.checkout_any(tenant, creds).await,
        }
    }

    async fn checkout_any(&self, tenant: u128, creds: &Credentials) -> Result<Lease, UpstreamError> {
        let deadline = Instant::now() + self.inner.settings.queue_timeout;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (pick, spares) = self.pick(tenant)?;
            self.open_spares(spares, creds);
            match pick {
                Pick::Lease(lease) => return Ok(lease),
                Pick::Open(slot) => return self.open(slot, creds).await,
                Pick::Wait => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        debug!(tenant = %tenant_short(tenant), "pool full");
                        return Err(UpstreamError::PoolFull);
                    }
                }
            }
        }
    }

    /// The socket a continuation is pinned to. Only that entry is looked at
    /// (besides the sockets freed since the last checkout): dead, or idle
    /// past `max_age`, it is forgotten (and closed) here.
    fn checkout_preferred(&self, tenant: u128, id: SocketId) -> Result<Lease, UpstreamError> {
        let mut st = self.lock();
        // Every checkout reads the list of freed sockets, so it stays short
        // however long the pool goes without a fresh one.
        st.absorb(&self.inner.freed, self.inner.settings.max_age);
        let entry = st.sockets.get(&id).ok_or(UpstreamError::Gone)?;
        if entry.handle.shared.tenant != tenant {
            return Err(UpstreamError::Gone);
        }
        if spent(entry, &entry.handle.shared.lock(), Instant::now(), self.inner.settings.max_age) {
            st.remove(id);
            return Err(UpstreamError::Gone);
        }
        entry.handle.shared.try_lease()?;
        Ok(Lease::new(entry.handle.clone(), false))
    }

    /// One look at the pool for a fresh turn: what to lease or open, and
    /// the slots reserved for spares to open in the background (so that,
    /// after this checkout, `spares_per_tenant` sockets stay cold).
    fn pick(&self, tenant: u128) -> Result<(Pick, Vec<Reservation>), UpstreamError> {
        let s = &self.inner.settings;
        let mut st = self.lock();
        if st.closed {
            return Err(UpstreamError::Gone);
        }
        st.absorb(&self.inner.freed, s.max_age);
        let mine = st.counts.get(&tenant).copied().unwrap_or(0);
        let (mine, total) = st.with_connecting(Some(tenant), mine, st.sockets.len());
        let mut survey = Survey { mine, total, cold_count: st.cold_count(tenant, s.max_age) };
        let pick = self.pick_in(&mut st, tenant, &mut survey);
        let spares = match pick {
            Pick::Wait => Vec::new(),
            // The turn's own handshake is no spare.
            Pick::Open(_) => self.reserve_spares(&mut st, tenant, &survey, 1),
            Pick::Lease(_) => self.reserve_spares(&mut st, tenant, &survey, 0),
        };
        Ok((pick, spares))
    }

    fn pick_in(&self, st: &mut PoolState, tenant: u128, survey: &mut Survey) -> Pick {
        let s = &self.inner.settings;
        if let Some(lease) = st.take(tenant, true, s.max_age) {
            survey.cold_count = survey.cold_count.saturating_sub(1);
            return Pick::Lease(lease);
        }
        if survey.mine < s.per_tenant {
            if survey.total >= s.total && evict_other_idle(st, tenant) {
                survey.total -= 1;
            }
            if survey.total < s.total {
                survey.mine += 1;
                survey.total += 1;
                return Pick::Open(Reservation::take(self, st, tenant));
            }
        }
        // A fresh turn must take a socket holding some conversation's latest
        // response: the one idle the longest, least likely to be continued.
        if let Some(lease) = st.take(tenant, false, s.max_age) {
            return Pick::Lease(lease);
        }
        // None queued (a tool's `Lease::take` raced, say): any other?
        let any = st
            .sockets
            .values()
            .filter(|e| e.handle.shared.tenant == tenant)
            .find(|e| e.handle.shared.try_lease().is_ok());
        match any {
            Some(e) => Pick::Lease(Lease::new(e.handle.clone(), false)),
            None => Pick::Wait,
        }
    }

    /// Reserves slots for spares until the tenant has `spares_per_tenant`
    /// cold sockets (handshakes under way count), within the limits.
    fn reserve_spares(
        &self,
        st: &mut PoolState,
        tenant: u128,
        survey: &Survey,
        own_handshake: usize,
    ) -> Vec<Reservation> {
        let s = &self.inner.settings;
        let connecting = st.connecting.get(&tenant).copied().unwrap_or(0).saturating_sub(own_handshake);
        let want = s.spares_per_tenant.saturating_sub(survey.cold_count + connecting);
        let room = s.per_tenant.saturating_sub(survey.mine).min(s.total.saturating_sub(survey.total));
        (0..want.min(room)).map(|_| Reservation::take(self, st, tenant)).collect()
    }

    /// Opens a socket in a slot `pick` reserved.
    async fn open(&self, mut slot: Reservation, creds: &Credentials) -> Result<Lease, UpstreamError> {
        let tenant = slot.tenant;
        // Boxed: the handshake's future (TLS included) is ~10 KB, and inline
        // it made every request's future as big, moved at each await.
        let result = Box::pin(connect(&self.inner.settings, creds)).await;
        let mut st = self.lock();
        slot.release(&mut st);
        let ws = match result {
            Ok(_) if st.closed => return Err(UpstreamError::Gone),
            Ok(ws) => ws,
            Err(e) => {
                drop(st);
                self.inner.notify.notify_waiters();
                debug!(tenant = %tenant_short(tenant), error = %e, "upstream connect failed");
                return Err(e);
            }
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.opened_total.fetch_add(1, Ordering::Relaxed);
        let (handle, join) = spawn_socket(
            ws,
            id,
            tenant,
            &self.inner.settings,
            self.inner.notify.clone(),
            self.inner.shutdown.subscribe(),
        );
        handle.shared.report_to(self.inner.freed.clone());
        handle.shared.try_lease()?;
        let lease = Lease::new(handle.clone(), true);
        st.insert(id, Entry { handle, join });
        Ok(lease)
    }

    /// Opens the spares `pick` reserved slots for, in the background.
    fn open_spares(&self, slots: Vec<Reservation>, creds: &Credentials) {
        for slot in slots {
            let pool = self.clone();
            let creds = creds.clone();
            tokio::spawn(async move {
                let tenant = slot.tenant;
                // Dropping the new lease leaves the socket idle: a spare.
                if let Ok(lease) = pool.open(slot, &creds).await {
                    debug!(socket = lease.id(), tenant = %tenant_short(tenant), "spare socket open");
                }
            });
        }
    }

    /// What `socket` is doing now.
    pub fn status(&self, socket: SocketId) -> SocketSnapshot {
        let st = self.lock();
        st.sockets.get(&socket).map_or(SocketSnapshot::Gone, |e| self.snapshot(e))
    }

    /// Every socket of `tenant` and what it is doing: one look at the pool
    /// for a whole plan (the session store asks about several).
    pub fn tenant_sockets(&self, tenant: u128) -> Vec<(SocketId, SocketSnapshot)> {
        let st = self.lock();
        st.sockets
            .iter()
            .filter(|(_, e)| e.handle.shared.tenant == tenant)
            .map(|(id, e)| (*id, self.snapshot(e)))
            .collect()
    }

    /// The session store retired the session whose latest response,
    /// `response_id`, socket `id` holds: nothing continues from it, so a
    /// fresh turn may take the socket as it takes one with an empty cache,
    /// before opening a new socket or wiping a live session's. Nothing
    /// changes if the socket has served another response since (or died).
    pub fn orphan(&self, id: SocketId, response_id: &str) {
        let mut st = self.lock();
        let Some(e) = st.sockets.get(&id) else { return };
        let (tenant, since) = {
            let mut s = e.handle.shared.lock();
            if s.dead.is_some() || s.orphaned || s.latest.as_deref() != Some(response_id) {
                return;
            }
            s.orphaned = true;
            // A busy socket is queued when it is freed, as cold then.
            if s.busy() {
                return;
            }
            (e.handle.shared.tenant, s.idle_since)
        };
        st.enqueue(true, tenant, (id, since), Instant::now(), self.inner.settings.max_age);
    }

    /// The state of one of `tenant`'s sockets (`Gone` if it is not one).
    pub fn socket_snapshot(&self, tenant: u128, id: SocketId) -> SocketSnapshot {
        let st = self.lock();
        match st.sockets.get(&id) {
            Some(e) if e.handle.shared.tenant == tenant => self.snapshot(e),
            _ => SocketSnapshot::Gone,
        }
    }

    fn snapshot(&self, e: &Entry) -> SocketSnapshot {
        let s = e.handle.shared.lock();
        if s.dead.is_some() || e.handle.shared.age() >= self.inner.settings.max_age {
            SocketSnapshot::Gone
        } else if s.busy() {
            SocketSnapshot::Busy
        } else {
            SocketSnapshot::Idle { latest_response_id: s.latest.clone(), age: e.handle.shared.age() }
        }
    }

    /// Counters for `/metrics` and `/debug`.
    pub fn stats(&self) -> PoolStats {
        let mut st = self.lock();
        let busy = st.sweep(self.inner.settings.max_age);
        PoolStats {
            open: st.sockets.len(),
            busy,
            opened_total: self.inner.opened_total.load(Ordering::Relaxed),
            // Kept per tenant at every insert and removal (the sweep's included).
            per_tenant: st.counts.clone(),
        }
    }

    /// Closes every socket with code 1000: idle ones now, busy ones when
    /// their response ends. Waits for all of them; wrap it in a timeout.
    pub async fn close_all(&self) {
        let entries: Vec<Entry> = {
            let mut st = self.lock();
            st.closed = true;
            st.counts.clear();
            st.cold.clear();
            st.warm.clear();
            st.sockets.drain().map(|(_, e)| e).collect()
        };
        let _ = self.inner.shutdown.send(true);
        for e in entries {
            let Entry { handle, join } = e;
            drop(handle);
            let _ = join.await;
        }
        self.inner.notify.notify_waiters();
    }
}

/// Whether the pool should forget `e` (state `s`): dead, or idle past `max_age`.
fn spent(e: &Entry, s: &State, now: Instant, max_age: Duration) -> bool {
    let aged = now.saturating_duration_since(e.handle.shared.opened_at) >= max_age;
    s.dead.is_some() || (aged && !s.busy())
}

/// Closes one idle socket of another tenant to make room: one whose cache no
/// session can use first, else the one idle the longest (its conversation is
/// the least likely to come back).
fn evict_other_idle(st: &mut PoolState, tenant: u128) -> bool {
    let victim = st
        .sockets
        .iter()
        .filter_map(|(id, e)| {
            let s = e.handle.shared.lock();
            let idle = e.handle.shared.tenant != tenant && !s.busy();
            idle.then(|| ((s.holds_session(), s.idle_since), *id))
        })
        .min()
        .map(|(_, id)| id);
    let Some(id) = victim else { return false };
    debug!(socket = id, "closing another tenant's idle socket for room");
    st.remove(id).is_some()
}

//! The pool of upstream sockets: per-tenant, bounded per tenant and in total,
//! leased one turn at a time, rotated before `max_age`.
//!
//! A socket never serves another tenant. An idle socket whose cache is empty
//! is preferred over one holding some session's latest response, so checkouts
//! without a preference do not wipe a live session's warm state while there is
//! room to open a new socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::shared::{SocketHandle, State};
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
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
    opened_total: AtomicU64,
}

#[derive(Debug, Default)]
struct PoolState {
    sockets: HashMap<SocketId, Entry>,
    /// Handshakes in progress per tenant: they hold a slot.
    connecting: HashMap<u128, usize>,
    closed: bool,
}

#[derive(Debug)]
struct Entry {
    handle: SocketHandle,
    join: JoinHandle<()>,
}

/// What [`PoolState::survey`] saw of one tenant's sockets.
#[derive(Debug, Default)]
struct Survey {
    /// The tenant's sockets, handshakes under way included.
    mine: usize,
    /// All sockets, handshakes under way included.
    total: usize,
    /// An idle socket of the tenant with an empty cache.
    cold: Option<SocketId>,
    /// How many such sockets the tenant has (spares included).
    cold_count: usize,
    /// The tenant's idle socket unused the longest: when a fresh turn must
    /// take a socket holding some conversation's latest response, the one
    /// least likely to be continued.
    idle: Option<SocketId>,
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
    /// One pass over the sockets: forgets dead ones, closes idle ones past
    /// `max_age` (dropping the pool's handle ends an idle task with a normal
    /// close), notes what a checkout for `tenant` needs, and shows each
    /// socket kept to `each`, under its lock.
    fn survey(
        &mut self,
        tenant: Option<u128>,
        max_age: Duration,
        mut each: impl FnMut(&Entry, &State),
    ) -> Survey {
        let now = Instant::now();
        let mut v = Survey::default();
        let mut lru: Option<(Option<std::time::Instant>, SocketId)> = None;
        self.sockets.retain(|id, e| {
            let s = e.handle.shared.lock();
            let keep = !spent(e, &s, now, max_age);
            if keep {
                each(e, &s);
            }
            if keep && Some(e.handle.shared.tenant) == tenant {
                v.mine += 1;
                if !s.busy() {
                    if lru.is_none_or(|l| (s.idle_since, *id) < l) {
                        lru = Some((s.idle_since, *id));
                    }
                    if s.latest.is_none() {
                        v.cold.get_or_insert(*id);
                        v.cold_count += 1;
                    }
                }
            }
            keep
        });
        v.idle = lru.map(|(_, id)| id);
        (v.mine, v.total) = self.with_connecting(tenant, v.mine, self.sockets.len());
        v
    }

    /// `mine` and `total` plus the handshakes under way (for `tenant`, and in all).
    fn with_connecting(&self, tenant: Option<u128>, mine: usize, total: usize) -> (usize, usize) {
        let connecting: usize = self.connecting.values().sum();
        let own = tenant.and_then(|t| self.connecting.get(&t)).copied().unwrap_or(0);
        (mine + own, total + connecting)
    }

    /// Leases socket `id` if it is still idle.
    fn lease(&self, id: Option<SocketId>) -> Option<Lease> {
        let e = self.sockets.get(&id?)?;
        e.handle.shared.try_lease().ok()?;
        Some(Lease::new(e.handle.clone(), false))
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

    /// The socket a continuation is pinned to. Only that entry is looked at:
    /// dead, or idle past `max_age`, it is forgotten (and closed) here.
    fn checkout_preferred(&self, tenant: u128, id: SocketId) -> Result<Lease, UpstreamError> {
        let mut st = self.lock();
        let entry = st.sockets.get(&id).ok_or(UpstreamError::Gone)?;
        if entry.handle.shared.tenant != tenant {
            return Err(UpstreamError::Gone);
        }
        if spent(entry, &entry.handle.shared.lock(), Instant::now(), self.inner.settings.max_age) {
            st.sockets.remove(&id);
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
        let mut survey = st.survey(Some(tenant), s.max_age, |_, _| {});
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
        if let Some(lease) = st.lease(survey.cold) {
            survey.cold_count -= 1;
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
        if let Some(lease) = st.lease(survey.idle) {
            return Pick::Lease(lease);
        }
        // The idle one seen was taken since (a tool's `Lease::take`): any other?
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
        let result = connect(&self.inner.settings, creds).await;
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
        handle.shared.try_lease()?;
        let lease = Lease::new(handle.clone(), true);
        st.sockets.insert(id, Entry { handle, join });
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
        let mut per_tenant = HashMap::new();
        let mut busy = 0;
        st.survey(None, self.inner.settings.max_age, |e, s| {
            *per_tenant.entry(e.handle.shared.tenant).or_default() += 1;
            busy += usize::from(s.busy());
        });
        PoolStats {
            open: st.sockets.len(),
            busy,
            opened_total: self.inner.opened_total.load(Ordering::Relaxed),
            per_tenant,
        }
    }

    /// Closes every socket with code 1000: idle ones now, busy ones when
    /// their response ends. Waits for all of them; wrap it in a timeout.
    pub async fn close_all(&self) {
        let entries: Vec<Entry> = {
            let mut st = self.lock();
            st.closed = true;
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

/// Closes one idle socket of another tenant to free a global slot.
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
            idle.then(|| ((s.latest.is_some(), s.idle_since), *id))
        })
        .min()
        .map(|(_, id)| id);
    let Some(id) = victim else { return false };
    debug!(socket = id, "closing another tenant's idle socket for room");
    st.sockets.remove(&id).is_some()
}

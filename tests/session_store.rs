//! The store's decisions: continue, and every fresh reason it can give.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether::session::{
    ChainSeed, Fingerprint, FreshReason, ItemKind, Plan, Role, SessionLimits, SessionStore, SocketId,
    SocketStates, SocketStatus, TenantId, fingerprint_values,
};

#[derive(Default)]
struct Sockets(HashMap<SocketId, (bool, Option<String>)>);

impl Sockets {
    fn idle(&mut self, s: SocketId, latest: &str) {
        self.0.insert(s, (false, Some(latest.to_owned())));
    }
    fn busy(&mut self, s: SocketId) {
        self.0.entry(s).or_default().0 = true;
    }
}

impl SocketStates for Sockets {
    fn status(&self, socket: SocketId) -> SocketStatus<'_> {
        match self.0.get(&socket) {
            None => SocketStatus::Gone,
            Some((true, _)) => SocketStatus::Busy,
            Some((false, latest)) => SocketStatus::Idle { latest_response_id: latest.as_deref() },
        }
    }
}

fn seed(tenant: u128) -> ChainSeed<'static> {
    ChainSeed { tenant: TenantId(tenant), model: "gpt-5", store: false }
}

fn fp_with(seed: &ChainSeed<'_>, items: &[Value]) -> Fingerprint {
    fingerprint_values(seed, items).expect("objects")
}

fn fp(items: &[Value]) -> Fingerprint {
    fp_with(&seed(1), items)
}

fn user(t: &str) -> Value {
    json!({"role": "user", "content": t})
}

fn answer(t: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{t}"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": t, "annotations": []}]})
}

fn store() -> SessionStore {
    SessionStore::new(SessionLimits::default())
}

/// Commits turn one (`u1` -> `a1`) on socket 1 and returns the history.
fn first_turn(st: &mut SessionStore, sockets: &mut Sockets, now: Instant) -> Vec<Value> {
    let history = vec![user("u1"), answer("a1")];
    st.commit(None, &fp(&history), "resp_1", 1, now);
    sockets.idle(1, "resp_1");
    history
}

fn fresh_reason(p: Plan) -> FreshReason {
    match p {
        Plan::Fresh { reason } => reason,
        other => panic!("expected fresh, got {other:?}"),
    }
}

#[test]
fn continues_with_the_new_suffix_and_advances() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let mut h = first_turn(&mut st, &mut sk, t0);
    h.push(user("u2"));
    let plan = st.plan(&fp(&h), t0, &sk);
    let Plan::Continue { session, parent_response_id, delta_start, socket } = plan else {
        panic!("expected continue, got {plan:?}");
    };
    assert_eq!((parent_response_id.as_str(), delta_start, socket), ("resp_1", 2, 1));
    sk.busy(1);
    let mut out = fp(&h);
    out.extend_values(&[answer("a2")]).expect("object");
    assert_eq!(st.commit(Some(session), &out, "resp_2", 1, t0), session);
    sk.idle(1, "resp_2");
    st.record_turn(session, true, 100);
    assert_eq!(st.len(), 1);
    // The old tip is gone: a fork from it is fresh, and says why.
    let fork = [user("u1"), answer("a1"), user("other")];
    assert_eq!(fresh_reason(st.plan(&fp(&fork), t0, &sk)), FreshReason::ParentNotLatest);
    h.push(answer("a2"));
    h.push(user("u3"));
    assert!(matches!(st.plan(&fp(&h), t0, &sk), Plan::Continue { delta_start: 4, .. }));
    let info = &st.snapshot(t0)[0];
    assert_eq!((info.items, info.turns, info.continues, info.bytes_saved), (4, 1, 1, 100));
}

#[test]
fn echo_with_ids_dropped_and_string_content_still_continues() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    first_turn(&mut st, &mut sk, t0);
    let echoed = [user("u1"), json!({"role": "assistant", "content": "a1"}), user("u2")];
    assert!(matches!(st.plan(&fp(&echoed), t0, &sk), Plan::Continue { delta_start: 2, .. }));
}

#[test]
fn empty_input_and_empty_delta() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = first_turn(&mut st, &mut sk, t0);
    assert_eq!(fresh_reason(st.plan(&fp(&[]), t0, &sk)), FreshReason::EmptyInput);
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::EmptyDelta);
}

#[test]
fn fork_while_busy_is_fresh() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = first_turn(&mut st, &mut sk, t0);
    let a = [h.clone(), vec![user("a")]].concat();
    let b = [h.clone(), vec![user("b")]].concat();
    assert!(matches!(st.plan(&fp(&a), t0, &sk), Plan::Continue { .. }));
    sk.busy(1);
    assert_eq!(fresh_reason(st.plan(&fp(&b), t0, &sk)), FreshReason::SocketBusy);
}

#[test]
fn socket_states() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = [first_turn(&mut st, &mut sk, t0), vec![user("u2")]].concat();
    sk.idle(1, "resp_other");
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::ParentNotLatest);
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::ParentNotLatest);

    let (mut st, mut sk) = (store(), Sockets::default());
    first_turn(&mut st, &mut sk, t0);
    sk.0.clear();
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::SocketGone);

    let (mut st, mut sk) = (store(), Sockets::default());
    first_turn(&mut st, &mut sk, t0);
    st.forget_socket(1);
    assert_eq!(st.len(), 0);
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::SocketGone);
}

#[test]
fn a_socket_holds_one_session() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = [first_turn(&mut st, &mut sk, t0), vec![user("u2")]].concat();
    // Another conversation's fresh turn runs on socket 1: session 1 is superseded.
    st.commit(None, &fp(&[user("x"), answer("y")]), "resp_x", 1, t0);
    sk.idle(1, "resp_x");
    assert_eq!(st.len(), 1);
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::ParentNotLatest);
}

#[test]
fn evicted_expired_and_incomplete() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = [first_turn(&mut st, &mut sk, t0), vec![user("u2")]].concat();
    let id = st.snapshot(t0)[0].id;
    st.evict(id);
    assert_eq!(fresh_reason(st.plan(&fp(&h), t0, &sk)), FreshReason::Evicted);

    let (mut st, mut sk) = (store(), Sockets::default());
    first_turn(&mut st, &mut sk, t0);
    let later = t0 + SessionLimits::default().ttl + Duration::from_secs(1);
    assert_eq!(fresh_reason(st.plan(&fp(&h), later, &sk)), FreshReason::Expired);
    assert_eq!(st.len(), 0);

    let (mut st, mut sk) = (store(), Sockets::default());
    let h1 = first_turn(&mut st, &mut sk, t0);
    let id = st.snapshot(t0)[0].id;
    let partial = [h1, vec![user("u2"), answer("cut")]].concat();
    st.record_incomplete(Some(id), &fp(&partial), 1);
    let next = [partial, vec![user("u3")]].concat();
    assert_eq!(fresh_reason(st.plan(&fp(&next), t0, &sk)), FreshReason::ParentNotCompleted);
}

#[test]
fn lru_capacity() {
    let limits = SessionLimits { max: 2, ttl: Duration::from_secs(60) };
    let (mut st, mut sk, t0) = (SessionStore::new(limits), Sockets::default(), Instant::now());
    for i in 0..3u64 {
        let h = [user(&format!("c{i}")), answer("a")];
        st.commit(None, &fp(&h), &format!("resp_{i}"), i, t0);
        sk.idle(i, &format!("resp_{i}"));
    }
    assert_eq!(st.len(), 2);
    let first = [user("c0"), answer("a"), user("more")];
    assert_eq!(fresh_reason(st.plan(&fp(&first), t0, &sk)), FreshReason::CapacityEvicted);
    let last = [user("c2"), answer("a"), user("more")];
    assert!(matches!(st.plan(&fp(&last), t0, &sk), Plan::Continue { .. }));
}

#[test]
fn model_store_and_tenant_are_separate_chains() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = [first_turn(&mut st, &mut sk, t0), vec![user("u2")]].concat();
    let other_model = ChainSeed { model: "gpt-5-mini", ..seed(1) };
    let other_store = ChainSeed { store: true, ..seed(1) };
    assert_eq!(fresh_reason(st.plan(&fp_with(&other_model, &h), t0, &sk)), FreshReason::ModelChanged);
    assert_eq!(fresh_reason(st.plan(&fp_with(&other_store, &h), t0, &sk)), FreshReason::StoreChanged);
    assert_eq!(fresh_reason(st.plan(&fp_with(&seed(2), &h), t0, &sk)), FreshReason::FirstTurn);
}

#[test]
fn divergence_names_index_and_kinds() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    first_turn(&mut st, &mut sk, t0);
    let edited = [user("u1"), answer("A1 edited"), user("u2")];
    let r = fresh_reason(st.plan(&fp(&edited), t0, &sk));
    let want = FreshReason::DivergedAt {
        index: 1,
        ours: ItemKind::Message(Role::Assistant),
        theirs: ItemKind::Message(Role::Assistant),
    };
    assert_eq!(r, want);
    assert_eq!(r.label(), "diverged");
    assert_eq!(
        r.to_string(),
        "diverged from the nearest session at item 1 (session has message:assistant, request has message:assistant)"
    );
    let rewound = [user("u1")];
    let r = fresh_reason(st.plan(&fp(&rewound), t0, &sk));
    assert!(matches!(r, FreshReason::DivergedAt { index: 1, theirs: ItemKind::Missing, .. }), "{r:?}");
    let unrelated = [user("zzz"), user("u2")];
    assert_eq!(fresh_reason(st.plan(&fp(&unrelated), t0, &sk)), FreshReason::NoMatchingTip);
}

#[test]
fn memory_is_reported_and_bounded_per_session() {
    let (mut st, t0) = (store(), Instant::now());
    let long: Vec<Value> = (0..3000).map(|i| user(&format!("{i}"))).collect();
    st.commit(None, &fp(&long), "resp_1", 1, t0);
    let per = st.snapshot(t0)[0].approx_bytes;
    assert!(per < 9_000, "{per}");
    assert!(st.approx_memory_bytes() >= per);
}

#[test]
fn moving_a_session_to_another_socket_keeps_the_new_owner_of_the_old_one() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h1 = [user("u1"), answer("a1")];
    let a = st.commit(None, &fp(&h1), "resp_1", 1, t0);
    // The continuation of `a` ran on socket 2 (e.g. after a reconnect).
    let h2 = [user("u1"), answer("a1"), user("u2"), answer("a2")];
    assert_eq!(st.commit(Some(a), &fp(&h2), "resp_2", 2, t0), a);
    // A new conversation lands on socket 1, then `a` moves again: socket 1 keeps its owner.
    let b = st.commit(None, &fp(&[user("b"), answer("b")]), "resp_b", 1, t0);
    let h3 = [h2.to_vec(), vec![user("u3"), answer("a3")]].concat();
    st.commit(Some(a), &fp(&h3), "resp_3", 3, t0);
    sk.idle(1, "resp_b");
    sk.idle(3, "resp_3");
    let next_b = [user("b"), answer("b"), user("more")];
    assert!(matches!(st.plan(&fp(&next_b), t0, &sk), Plan::Continue { session, .. } if session == b));
    let next_a = [h3, vec![user("u4")]].concat();
    assert!(
        matches!(st.plan(&fp(&next_a), t0, &sk), Plan::Continue { session, socket: 3, .. } if session == a)
    );
}

#[test]
fn the_store_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SessionStore>();
}

#[test]
fn expiry_holds_even_when_callers_clocks_are_out_of_order() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let ttl = SessionLimits::default().ttl;
    let later = t0 + Duration::from_secs(60);
    st.commit(None, &fp(&[user("a"), answer("a")]), "resp_a", 1, later);
    st.commit(None, &fp(&[user("b"), answer("b")]), "resp_b", 2, t0);
    sk.idle(1, "resp_a");
    sk.idle(2, "resp_b");
    let at = t0 + ttl + Duration::from_secs(1);
    let b = [user("b"), answer("b"), user("more")];
    assert_eq!(fresh_reason(st.plan(&fp(&b), at, &sk)), FreshReason::Expired);
    let a = [user("a"), answer("a"), user("more")];
    assert!(matches!(st.plan(&fp(&a), at, &sk), Plan::Continue { .. }));
}

#[test]
fn reason_labels_are_stable_unique_snake_case() {
    let k = ItemKind::Message(Role::User);
    let all = [
        FreshReason::FirstTurn,
        FreshReason::EmptyInput,
        FreshReason::NoMatchingTip,
        FreshReason::DivergedAt { index: 3, ours: k, theirs: ItemKind::FunctionCallOutput },
        FreshReason::ParentNotLatest,
        FreshReason::SocketBusy,
        FreshReason::SocketGone,
        FreshReason::ModelChanged,
        FreshReason::StoreChanged,
        FreshReason::ParentNotCompleted,
        FreshReason::Evicted,
        FreshReason::CapacityEvicted,
        FreshReason::Expired,
        FreshReason::EmptyDelta,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    assert!(all.iter().all(|r| !r.to_string().is_empty()));
    assert!(all[3].to_string().contains("item 3"));
    assert!(all[3].to_string().contains("function_call_output"));
}

fn orphans(st: &mut SessionStore) -> Vec<(SocketId, String)> {
    st.take_orphans().map(|(s, r)| (s, r.into())).collect()
}

/// The store tells which sockets hold a response that no session continues
/// from any more (the pool then reuses them first for fresh turns): the
/// socket of a session superseded by the same conversation elsewhere, of an
/// evicted, expired or capacity-dropped one; never the socket a session
/// advanced on, nor the one a commit just used.
#[test]
fn retired_sessions_leave_their_sockets_orphaned() {
    let (mut st, mut sk, t0) = (store(), Sockets::default(), Instant::now());
    let h = first_turn(&mut st, &mut sk, t0);
    assert!(orphans(&mut st).is_empty());
    // The same turn again, fresh on socket 2 (a retry): the session on socket 1 is superseded.
    st.commit(None, &fp(&h), "resp_2", 2, t0);
    assert_eq!(orphans(&mut st), vec![(1, "resp_1".to_owned())]);
    assert!(orphans(&mut st).is_empty(), "taken once");
    // It continues on socket 2: nothing is orphaned.
    let id = st.snapshot(t0)[0].id;
    let h2 = [h, vec![user("u2"), answer("a2")]].concat();
    st.commit(Some(id), &fp(&h2), "resp_3", 2, t0);
    assert!(orphans(&mut st).is_empty());
    // Another conversation's fresh turn on socket 2 supersedes it there: the
    // socket holds the new response, so it is no orphan.
    st.commit(None, &fp(&[user("x"), answer("y")]), "resp_x", 2, t0);
    assert!(orphans(&mut st).is_empty());
    // Evicted after a failure.
    let id = st.snapshot(t0)[0].id;
    st.evict(id);
    assert_eq!(orphans(&mut st), vec![(2, "resp_x".to_owned())]);
    // Expired (found by the sweep of a later plan).
    st.commit(None, &fp(&[user("z"), answer("w")]), "resp_z", 3, t0);
    let later = t0 + SessionLimits::default().ttl + Duration::from_secs(1);
    sk.idle(3, "resp_z");
    st.plan(&fp(&[user("q")]), later, &sk);
    assert_eq!(orphans(&mut st), vec![(3, "resp_z".to_owned())]);
    // Pushed out by capacity.
    let limits = SessionLimits { max: 1, ttl: Duration::from_secs(60) };
    let mut st = SessionStore::new(limits);
    st.commit(None, &fp(&[user("c0"), answer("a")]), "resp_c0", 4, t0);
    st.commit(None, &fp(&[user("c1"), answer("a")]), "resp_c1", 5, t0);
    assert_eq!(orphans(&mut st), vec![(4, "resp_c0".to_owned())]);
}

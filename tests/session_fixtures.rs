//! Fixtures of how real clients echo history (tests/fixtures/session/): each
//! turn after the first must continue with exactly the new items.
//!
//! Every fixture lists, per turn, the `input` the client sends (its own
//! serialization of the history, byte for byte) and the `output` the server
//! returned. The shapes come from the clients' public sources and PROTOCOL.md
//! §4; the `source` field of each file says which habit it exercises.

use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;
use tether::session::{
    ChainSeed, FreshReason, Plan, SessionLimits, SessionStore, SocketId, SocketStates, SocketStatus,
    TenantId, fingerprint,
};

#[derive(Deserialize)]
struct Fixture {
    client: String,
    model: String,
    store: bool,
    turns: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    input: Vec<Box<RawValue>>,
    output: Vec<Box<RawValue>>,
}

struct Socket(String);

impl SocketStates for Socket {
    fn status(&self, _: SocketId) -> SocketStatus<'_> {
        SocketStatus::Idle { latest_response_id: Some(&self.0) }
    }
}

fn refs(items: &[Box<RawValue>]) -> Vec<&RawValue> {
    items.iter().map(|r| &**r).collect()
}

fn run(name: &str, tenant: u128, store: &mut SessionStore) {
    let path = format!("{}/tests/fixtures/session/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fx: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let seed = ChainSeed { tenant: TenantId(tenant), model: &fx.model, store: fx.store };
    let mut socket = Socket(String::new());
    let now = Instant::now();
    let mut session = None;
    let mut expected_delta = 0;
    assert!(fx.turns.len() >= 3, "{}: at least three turns", fx.client);
    for (k, turn) in fx.turns.iter().enumerate() {
        let mut fp = fingerprint(&seed, &refs(&turn.input)).unwrap_or_else(|e| panic!("{e}"));
        let plan = store.plan(&fp, now, &socket);
        if k == 0 {
            assert_eq!(plan, Plan::Fresh { reason: FreshReason::FirstTurn }, "{}", fx.client);
        } else {
            match plan {
                Plan::Continue { session: s, delta_start, parent_response_id, .. } => {
                    assert_eq!(Some(s), session, "{}", fx.client);
                    assert_eq!(delta_start, expected_delta, "{} turn {k}", fx.client);
                    assert_eq!(parent_response_id, format!("resp_{}", k - 1));
                }
                Plan::Fresh { reason } => panic!("{} turn {k}: fresh ({reason})", fx.client),
            }
        }
        fp.extend(&refs(&turn.output)).unwrap_or_else(|e| panic!("{e}"));
        let id = store.commit(session, &fp, &format!("resp_{k}"), tenant as SocketId, now);
        socket.0 = format!("resp_{k}");
        session = Some(id);
        expected_delta = turn.input.len() + turn.output.len();
    }
}

const FIXTURES: &[&str] = &[
    "openai_python_sdk.json",
    "openai_python_output_text.json",
    "openai_node_sdk.json",
    "openai_agents_python.json",
    "codex_cli.json",
];

#[test]
fn every_client_continues_after_its_first_turn() {
    let mut store = SessionStore::new(SessionLimits::default());
    for (i, name) in FIXTURES.iter().enumerate() {
        run(name, i as u128 + 1, &mut store);
    }
    assert_eq!(store.len(), FIXTURES.len());
}

/// Known limit, by design (DESIGN §3 keeps `reasoning.id`): a client that
/// strips reasoning ids under `store:false` (e.g. the Vercel AI SDK after
/// vercel/ai#12687) does not continue, and the miss says where and why.
#[test]
fn stripped_reasoning_ids_are_fresh_and_explained() {
    let path = format!("{}/tests/fixtures/session/codex_cli.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fx: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let seed = ChainSeed { tenant: TenantId(9), model: &fx.model, store: fx.store };
    let mut store = SessionStore::new(SessionLimits::default());
    let now = Instant::now();
    let first = &fx.turns[0];
    let mut fp = fingerprint(&seed, &refs(&first.input)).unwrap_or_else(|e| panic!("{e}"));
    fp.extend(&refs(&first.output)).unwrap_or_else(|e| panic!("{e}"));
    store.commit(None, &fp, "resp_0", 1, now);
    let stripped: Vec<Box<RawValue>> = fx.turns[1]
        .input
        .iter()
        .map(|raw| {
            let mut v: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
            if v["type"] == "reasoning"
                && let Some(o) = v.as_object_mut()
            {
                o.remove("id");
            }
            RawValue::from_string(v.to_string()).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let fp = fingerprint(&seed, &refs(&stripped)).unwrap_or_else(|e| panic!("{e}"));
    let plan = store.plan(&fp, now, &Socket("resp_0".into()));
    let want = FreshReason::DivergedAt {
        index: 2,
        ours: tether::session::ItemKind::Reasoning,
        theirs: tether::session::ItemKind::Reasoning,
    };
    assert_eq!(plan, Plan::Fresh { reason: want });
}

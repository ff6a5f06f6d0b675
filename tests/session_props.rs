//! Property tests: re-serializations inside the equivalence continue with
//! exactly the new suffix; any change outside it never continues a differing
//! history; tenants, models and store flags never share chains.
//!
//! The oracle is structural equality of the generated items, not hashes.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use serde_json::value::RawValue;
use tether::session::{
    ChainSeed, Fingerprint, FreshReason, Plan, SessionLimits, SessionStore, SocketId, SocketStates,
    SocketStatus, TenantId, fingerprint,
};

#[derive(Debug, Clone, PartialEq)]
enum Item {
    User(String),
    Assistant(String, Option<String>),
    Call { call_id: String, name: String, args: String },
    Output { call_id: String, output: String },
    Reasoning { id: String, enc: Option<String> },
}

fn text() -> impl Strategy<Value = String> {
    // Mostly short; sometimes around the 256-byte long-string threshold.
    prop_oneof![
        6 => "[a-z0-9 é\"\\\\\n{}:]{0,10}",
        1 => "[a-z é\"\\\\\n]{240,270}",
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        text().prop_map(Item::User),
        (text(), proptest::option::of("commentary|final_answer")).prop_map(|(t, p)| Item::Assistant(t, p)),
        ("call_[a-z0-9]{1,4}", "[a-z_]{1,6}", text())
            .prop_map(|(call_id, name, args)| { Item::Call { call_id, name, args } }),
        ("call_[a-z0-9]{1,4}", text()).prop_map(|(call_id, output)| Item::Output { call_id, output }),
        ("rs_[a-z0-9]{1,4}", proptest::option::of("[A-Za-z0-9+/]{1,12}"))
            .prop_map(|(id, enc)| Item::Reasoning { id, enc }),
    ]
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Renders `item` as JSON text; `style` picks a re-serialization inside the
/// equivalence (ids, status, key order, string vs parts, part type, empty
/// annotations/logprobs, nulls, missing message type).
fn render(item: &Item, style: u64) -> String {
    let bit = |n: u32| style >> n & 1 == 1;
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| kv.push((js(k), v));
    let message = |put: &mut dyn FnMut(&str, String), role: &str, t: &str, assistant: bool| {
        if !bit(6) {
            put("type", js("message"));
        }
        put("role", js(role));
        if bit(2) {
            put("content", js(t));
        } else {
            let ty = if assistant && bit(3) { "output_text" } else { "input_text" };
            let mut part = vec![format!("\"type\":{}", js(ty)), format!("\"text\":{}", js(t))];
            if assistant && bit(4) {
                part.push("\"annotations\":[]".into());
            }
            if assistant && bit(5) {
                part.push("\"logprobs\":[]".into());
            }
            if bit(9) {
                part.reverse();
            }
            put("content", format!("[{{{}}}]", part.join(",")));
        }
    };
    match item {
        Item::User(t) => message(&mut put, "user", t, false),
        Item::Assistant(t, phase) => {
            message(&mut put, "assistant", t, true);
            match phase {
                Some(p) => put("phase", js(p)),
                None if bit(8) => put("phase", "null".into()),
                None => {}
            }
        }
        Item::Call { call_id, name, args } => {
            put("type", js("function_call"));
            put("call_id", js(call_id));
            put("name", js(name));
            put("arguments", js(args));
        }
        Item::Output { call_id, output } => {
            put("type", js("function_call_output"));
            put("call_id", js(call_id));
            put("output", js(output));
        }
        Item::Reasoning { id, enc } => {
            put("type", js("reasoning"));
            put("id", js(id));
            put("summary", "[]".into());
            if let Some(e) = enc {
                put("encrypted_content", js(e));
            }
            if bit(7) {
                put("content", "null".into());
            }
        }
    }
    if !matches!(item, Item::Reasoning { .. }) {
        if bit(0) {
            put("id", js(&format!("srv_{}", style >> 40)));
        }
        if bit(1) {
            put("status", js("completed"));
        }
    }
    // Shuffle keys with a small LCG driven by the style.
    let mut x = style | 1;
    for i in (1..kv.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        kv.swap(i, (x >> 33) as usize % (i + 1));
    }
    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", body.join(", "))
}

fn fp_of(seed: &ChainSeed<'_>, items: &[Item], styles: &[u64]) -> Fingerprint {
    let raws: Vec<Box<RawValue>> = items
        .iter()
        .zip(styles.iter().cycle())
        .map(|(it, &s)| RawValue::from_string(render(it, s)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let refs: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
    fingerprint(seed, &refs).unwrap_or_else(|e| panic!("{e}"))
}

struct OneIdle;

impl SocketStates for OneIdle {
    fn status(&self, socket: SocketId) -> SocketStatus<'_> {
        match socket {
            1 => SocketStatus::Idle { latest_response_id: Some("resp_1") },
            _ => SocketStatus::Gone,
        }
    }
}

const SEED: ChainSeed<'static> = ChainSeed { tenant: TenantId(1), model: "gpt-5", store: false };

fn store_with(seed: &ChainSeed<'_>, history: &[Item], styles: &[u64]) -> SessionStore {
    let mut st = SessionStore::new(SessionLimits::default());
    st.commit(None, &fp_of(seed, history, styles), "resp_1", 1, Instant::now());
    st
}

#[derive(Debug, Clone)]
enum Mutation {
    Append(usize),
    Drop(usize),
    Insert(usize, Item),
    Swap(usize),
    Phase(usize),
    StripReasoning(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Append),
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), item()).prop_map(|(j, it)| Mutation::Insert(j, it)),
        any::<usize>().prop_map(Mutation::Swap),
        any::<usize>().prop_map(Mutation::Phase),
        any::<usize>().prop_map(Mutation::StripReasoning),
    ]
}

fn append_char(item: &mut Item, which: usize) {
    match item {
        Item::User(t) | Item::Assistant(t, _) => t.push('!'),
        Item::Call { call_id, name, args } => [call_id, name, args][which % 3].push('!'),
        Item::Output { call_id, output } => [call_id, output][which % 2].push('!'),
        Item::Reasoning { id, .. } => id.push('!'),
    }
}

fn apply(history: &[Item], m: &Mutation) -> Vec<Item> {
    let mut h = history.to_vec();
    let n = h.len();
    match m {
        Mutation::Append(j) => append_char(&mut h[j % n], *j),
        Mutation::Drop(j) => {
            h.remove(j % n);
        }
        Mutation::Insert(j, it) => h.insert(j % (n + 1), it.clone()),
        Mutation::Swap(j) if n >= 2 => h.swap(j % (n - 1), j % (n - 1) + 1),
        Mutation::Swap(_) => h.clear(),
        Mutation::Phase(j) => match &mut h[j % n] {
            Item::Assistant(_, p) => {
                *p = match p.as_deref() {
                    Some("commentary") => Some("final_answer".into()),
                    Some(_) => None,
                    None => Some("commentary".into()),
                }
            }
            other => append_char(other, *j),
        },
        Mutation::StripReasoning(j) => match &mut h[j % n] {
            Item::Reasoning { enc: enc @ Some(_), .. } => *enc = None,
            Item::Reasoning { enc: None, id } => id.push('!'),
            other => append_char(other, *j),
        },
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn equivalent_echo_continues_with_the_new_suffix(
        history in proptest::collection::vec(item(), 1..12),
        new in proptest::collection::vec(item(), 1..4),
        s1 in proptest::collection::vec(any::<u64>(), 16),
        s2 in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let mut st = store_with(&SEED, &history, &s1);
        let request = [history.clone(), new].concat();
        let plan = st.plan(&fp_of(&SEED, &request, &s2), Instant::now(), &OneIdle);
        prop_assert!(
            matches!(&plan, Plan::Continue { delta_start, .. } if *delta_start == history.len()),
            "{plan:?}"
        );
    }

    #[test]
    fn a_changed_history_never_continues(
        history in proptest::collection::vec(item(), 1..12),
        new in proptest::collection::vec(item(), 1..4),
        m in mutation(),
        s1 in proptest::collection::vec(any::<u64>(), 16),
        s2 in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let mut st = store_with(&SEED, &history, &s1);
        let request = [apply(&history, &m), new].concat();
        let plan = st.plan(&fp_of(&SEED, &request, &s2), Instant::now(), &OneIdle);
        if let Plan::Continue { delta_start, .. } = plan {
            prop_assert!(delta_start < request.len());
            prop_assert_eq!(&request[..delta_start], &history[..]);
        }
    }

    #[test]
    fn raw_and_value_paths_agree(
        items in proptest::collection::vec(item(), 0..8),
        styles in proptest::collection::vec(any::<u64>(), 8),
    ) {
        let raw = fp_of(&SEED, &items, &styles);
        let values: Vec<serde_json::Value> = items
            .iter()
            .zip(styles.iter().cycle())
            .map(|(it, &s)| serde_json::from_str(&render(it, s)).unwrap_or_default())
            .collect();
        let via_values = tether::session::fingerprint_values(&SEED, &values);
        prop_assert_eq!(Ok(raw), via_values);
    }

    #[test]
    fn tenants_models_and_store_flags_never_match(
        history in proptest::collection::vec(item(), 1..8),
        new in proptest::collection::vec(item(), 1..3),
        styles in proptest::collection::vec(any::<u64>(), 8),
        other_tenant in 2u128..,
        which in 0..3u8,
    ) {
        let mut st = store_with(&SEED, &history, &styles);
        let other = match which {
            0 => ChainSeed { tenant: TenantId(other_tenant), ..SEED },
            1 => ChainSeed { model: "gpt-5-mini", ..SEED },
            _ => ChainSeed { store: true, ..SEED },
        };
        let request = [history.clone(), new].concat();
        let plan = st.plan(&fp_of(&other, &request, &styles), Instant::now(), &OneIdle);
        let want = [FreshReason::FirstTurn, FreshReason::ModelChanged, FreshReason::StoreChanged];
        prop_assert_eq!(plan, Plan::Fresh { reason: want[usize::from(which)] });
    }
}

#[test]
fn render_styles_are_valid_json() {
    let items = [
        Item::User("a\"b".into()),
        Item::Assistant("x".into(), Some("commentary".into())),
        Item::Reasoning { id: "rs_1".into(), enc: None },
    ];
    let mut seen = HashMap::new();
    for style in 0..1024u64 {
        for it in &items {
            let s = render(it, style.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            serde_json::from_str::<serde_json::Value>(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            seen.insert(s, ());
        }
    }
    assert!(seen.len() > 100);
}

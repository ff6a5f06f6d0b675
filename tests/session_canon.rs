//! The raw-bytes canonical hash (`fingerprint`, what requests use) against
//! the `Value`-based one (`fingerprint_values`, the reference tree walk), for
//! arbitrary JSON items written many ways: whitespace, member order, `\u`
//! escapes, number forms, nesting.

use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use tether::session::{ChainSeed, ItemKind, TenantId, fingerprint, fingerprint_values};

const SEED: ChainSeed<'static> = ChainSeed { tenant: TenantId(3), model: "m", store: true };

fn raw_hash(text: &str) -> Option<(u128, ItemKind)> {
    let raw = RawValue::from_string(text.to_owned()).ok()?;
    let fp = fingerprint(&SEED, &[&raw]).ok()?;
    Some((fp.item_hash(0)?, fp.kind(0)))
}

fn value_hash(v: &Value) -> Option<(u128, ItemKind)> {
    let fp = fingerprint_values(&SEED, std::slice::from_ref(v)).ok()?;
    Some((fp.item_hash(0)?, fp.kind(0)))
}

/// The reference: the same text parsed into a `Value`, then hashed.
fn reference(text: &str) -> Option<(u128, ItemKind)> {
    value_hash(&serde_json::from_str(text).ok()?)
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "message", "user", "assistant", "output_text", "input_text", "function_call", "reasoning", "",
        ]).prop_map(str::to_owned),
        3 => "[a-z \"\\\\\n\t/é\u{1F600}\u{1}]{0,16}",
        1 => "[a-zé\"\\\\\n\u{1F600}]{250,262}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "role", "content", "id", "status", "text", "annotations", "logprobs", "call_id",
        ]).prop_map(str::to_owned),
        1 => string(),
    ]
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<u64>().prop_map(Number::from),
        any::<i64>().prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        Just(Number::from_f64(-0.0).unwrap_or_else(|| Number::from(0))),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Message-like items, so the message rules are exercised often.
fn message() -> impl Strategy<Value = Value> {
    let part = (prop::sample::select(vec!["output_text", "input_text"]), string(), any::<(bool, bool)>())
        .prop_map(|(ty, text, (a, l))| {
            let mut p = Map::new();
            p.insert("type".into(), ty.into());
            p.insert("text".into(), text.into());
            if a {
                p.insert("annotations".into(), Value::Array(vec![]));
            }
            if l {
                p.insert("logprobs".into(), Value::Array(vec![]));
            }
            Value::Object(p)
        });
    let content = prop_oneof![
        string().prop_map(Value::String),
        prop::collection::vec(part, 0..3).prop_map(Value::Array)
    ];
    let ty = prop_oneof![Just(None), Just(Some(Value::Null)), Just(Some("message".into()))];
    let role = prop::sample::select(vec!["user", "assistant", "developer"]);
    (ty, role, content, any::<bool>(), prop::collection::btree_map(key(), json(), 0..3)).prop_map(
        |(ty, role, content, id, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            if let Some(ty) = ty {
                m.insert("type".into(), ty);
            }
            m.insert("role".into(), role.into());
            m.insert("content".into(), content);
            if id {
                m.insert("id".into(), "msg_1".into());
                m.insert("status".into(), "completed".into());
            }
            Value::Object(m)
        },
    )
}

fn item() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => prop::collection::btree_map(key(), json(), 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => message(),
    ]
}

/// Writing choices: whitespace, member order, escapes.
struct Style(u64);

impl Style {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn ws(&mut self, out: &mut String) {
        out.push_str(["", "", " ", "\n  ", "\t", "\r\n"][self.roll(6) as usize]);
    }
    fn string(&mut self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str(r#"\""#),
                '\\' => out.push_str(r"\\"),
                '/' if self.roll(2) == 0 => out.push_str(r"\/"),
                '\n' if self.roll(2) == 0 => out.push_str(r"\n"),
                '\t' if self.roll(2) == 0 => out.push_str(r"\t"),
                // `"\u00e9"` for `"é"`, surrogate pairs for astral characters.
                c if c.is_control() || c as u32 > 0x7f && self.roll(2) == 0 => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn value(&mut self, out: &mut String, v: &Value) {
        match v {
            Value::Object(m) => {
                let mut members: Vec<(&String, &Value)> = m.iter().collect();
                for i in (1..members.len()).rev() {
                    members.swap(i, self.roll(i as u64 + 1) as usize);
                }
                out.push('{');
                for (i, (k, v)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.string(out, k);
                    self.ws(out);
                    out.push(':');
                    self.ws(out);
                    self.value(out, v);
                    self.ws(out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.value(out, v);
                    self.ws(out);
                }
                out.push(']');
            }
            Value::String(s) => self.string(out, s),
            other => out.push_str(&other.to_string()),
        }
    }
}

fn styled(v: &Value, seed: u64) -> String {
    let mut out = String::new();
    Style(seed).value(&mut out, v);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Compact, pretty and freely written texts of one item: each hashes
    /// from its raw bytes exactly as its parsed `Value` does, and all alike.
    #[test]
    fn raw_hash_equals_value_hash(v in item(), a in any::<u64>(), b in any::<u64>()) {
        let texts = [
            serde_json::to_string(&v).unwrap_or_default(),
            serde_json::to_string_pretty(&v).unwrap_or_default(),
            styled(&v, a),
            styled(&v, b),
        ];
        let first = raw_hash(&texts[0]);
        prop_assert!(first.is_some());
        for text in &texts {
            let raw = raw_hash(text);
            prop_assert_eq!(raw, reference(text), "{}", text);
            prop_assert_eq!(raw, first, "{}", text);
        }
    }
}

#[test]
fn number_forms() {
    let h = |n: &str| raw_hash(&format!(r#"{{"type":"x","n":{n}}}"#));
    let r = |n: &str| reference(&format!(r#"{{"type":"x","n":{n}}}"#));
    let forms = [
        "0",
        "-0",
        "1",
        "1.0",
        "100",
        "1e2",
        "1E2",
        "1e+2",
        "100.0",
        "100.00",
        "-0.0",
        "0.0",
        "0.1",
        "1e-1",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "12345678901234567890123",
        "1.5e300",
    ];
    for n in forms {
        assert_eq!(h(n), r(n), "{n}");
        assert!(h(n).is_some(), "{n}");
    }
    // Equal: forms serde_json reads as the same number of the same kind.
    for (a, b) in [("1e2", "100.0"), ("1E2", "1e+2"), ("100.00", "1e2"), ("-0", "-0.0"), ("0.1", "1e-1")] {
        assert_eq!(h(a), h(b), "{a} vs {b}");
    }
    // Different: an integer is not the float of the same value; 0 is not -0.
    for (a, b) in [("1", "1.0"), ("100", "1e2"), ("0", "-0"), ("0", "0.0"), ("-0.0", "0.0")] {
        assert_ne!(h(a), h(b), "{a} vs {b}");
    }
    // Out of a f64's range: not hashed, by either path.
    assert_eq!(h("1e400"), None);
    assert_eq!(r("1e400"), None);
}

#[test]
fn escapes_and_whitespace() {
    let a = raw_hash(r#"{"role":"user","content":"é \ud83d\ude00 /"}"#);
    for b in [
        r#"{"role":"user","content":"\u00e9 😀 \/"}"#,
        r#"{"role":"user","content":"\u00E9 \uD83D\uDE00 /"}"#,
        "{ \"content\" :\n\t\"é 😀 /\" ,\r\n \"role\":\"\\u0075ser\" }",
        r#"{"content":[{"text":"é 😀 /","type":"input_text"}],"role":"user","type":"message"}"#,
    ] {
        assert_eq!(raw_hash(b), a, "{b}");
        assert_eq!(raw_hash(b), reference(b), "{b}");
    }
}

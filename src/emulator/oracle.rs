//! The oracle: the emulator's own notion of "the same context".
//!
//! Every response the emulator produces records the full context it
//! reconstructed (parent chain + input). Tests compare that record with the
//! full `input` the client sent, under this module's normalisation. It is
//! deliberately independent of `crate::session`, so a bug shared by both
//! cannot hide. Normalisation:
//! - `null` fields are dropped, at any depth;
//! - a message without `type` is a `message`;
//! - the server `id` and `status` of `message`, `function_call` and
//!   `function_call_output` items are dropped (reasoning ids are kept);
//! - string message content equals a single `input_text` part;
//! - `output_text` parts equal `input_text` parts; empty `annotations` and
//!   `logprobs` arrays are dropped.

use std::fmt;

use serde_json::{Map, Value};

/// Where and how two contexts differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// Index of the first differing item (or the shorter length).
    pub index: usize,
    /// The expected item, normalised (`None` past the end).
    pub expected: Option<Value>,
    /// The item found, normalised (`None` past the end).
    pub got: Option<Value>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or_else(|| "<end>".to_owned(), Value::to_string);
        write!(
            f,
            "contexts differ at item {}: expected {} got {}",
            self.index,
            show(&self.expected),
            show(&self.got)
        )
    }
}

impl std::error::Error for Mismatch {}

/// Checks that two contexts are equal item by item under the oracle's normalisation.
pub fn same_context(expected: &[Value], got: &[Value]) -> Result<(), Mismatch> {
    let len = expected.len().max(got.len());
    for index in 0..len {
        let e = expected.get(index).map(normalize_item);
        let g = got.get(index).map(normalize_item);
        if e != g {
            return Err(Mismatch { index, expected: e, got: g });
        }
    }
    Ok(())
}

/// The normal form of a whole context.
pub fn normalize(items: &[Value]) -> Vec<Value> {
    items.iter().map(normalize_item).collect()
}

/// A context's items in normal form, each serialised once: what the prefix
/// cache, the token counts and the context hash are computed from, so a
/// turn normalises its context once instead of once per use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Normal(Vec<String>);

impl Normal {
    /// The normal form of `items`, serialised.
    pub(crate) fn of(items: &[Value]) -> Normal {
        let mut n = Normal(Vec::with_capacity(items.len()));
        n.extend(items);
        n
    }

    /// Appends the normal form of `items`.
    pub(crate) fn extend(&mut self, items: &[Value]) {
        self.0.extend(items.iter().map(|i| normalize_item(i).to_string()));
    }

    /// Each item's serialised normal form.
    pub(crate) fn items(&self) -> &[String] {
        &self.0
    }

    /// The compact serialisation of the whole normal context, a JSON array:
    /// byte for byte `Value::Array(normalize(items)).to_string()`.
    pub(crate) fn array_text(&self) -> String {
        let mut out = String::with_capacity(self.0.iter().map(|s| s.len() + 1).sum::<usize>() + 2);
        out.push('[');
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(item);
        }
        out.push(']');
        out
    }
}

/// The normal form of one item (see the module docs).
pub fn normalize_item(item: &Value) -> Value {
    let Value::Object(map) = drop_nulls(item) else {
        return drop_nulls(item);
    };
    let mut map = map;
    if !map.contains_key("type") && map.contains_key("role") {
        map.insert("type".into(), Value::from("message"));
    }
    let kind = map.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    if matches!(kind.as_str(), "message" | "function_call" | "function_call_output") {
        map.remove("id");
        map.remove("status");
    }
    if kind == "message" {
        if let Some(content) = map.remove("content") {
            map.insert("content".into(), normalize_content(content));
        }
    }
    Value::Object(map)
}

fn normalize_content(content: Value) -> Value {
    match content {
        Value::String(text) => Value::Array(vec![text_part(Value::String(text))]),
        Value::Array(parts) => Value::Array(parts.into_iter().map(normalize_part).collect()),
        other => other,
    }
}

fn normalize_part(part: Value) -> Value {
    let Value::Object(mut map) = part else {
        return part;
    };
    if map.get("type").and_then(Value::as_str) == Some("output_text") {
        map.insert("type".into(), Value::from("input_text"));
    }
    for key in ["annotations", "logprobs"] {
        if map.get(key).and_then(Value::as_array).is_some_and(Vec::is_empty) {
            map.remove(key);
        }
    }
    Value::Object(map)
}

fn text_part(text: Value) -> Value {
    let mut map = Map::new();
    map.insert("type".into(), Value::from("input_text"));
    map.insert("text".into(), text);
    Value::Object(map)
}

fn drop_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), drop_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(drop_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_normal_text_is_the_normal_arrays_serialisation() {
        let items = [
            json!({"role":"user","content":"hi \"there\"\n","id":null}),
            json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo","annotations":[]}]}),
            json!({"type":"function_call","call_id":"c","name":"f","arguments":"{}","status":"completed"}),
            json!({"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"x"}),
            json!("not an object"),
        ];
        for n in 0..=items.len() {
            let normal = Normal::of(&items[..n]);
            assert_eq!(normal.array_text(), Value::Array(normalize(&items[..n])).to_string(), "{n} items");
            assert_eq!(normal.items().len(), n);
        }
        let mut grown = Normal::of(&items[..2]);
        grown.extend(&items[2..]);
        assert_eq!(grown.items(), Normal::of(&items).items());
    }

    #[test]
    fn equivalent_forms_match() {
        let sent = [
            json!({"role":"user","content":"hi"}),
            json!({"type":"message","role":"assistant","content":[{"type":"input_text","text":"yo"}]}),
            json!({"type":"function_call","call_id":"c","name":"f","arguments":"{}"}),
            json!({"type":"function_call_output","call_id":"c","output":"ok","id":"fco_1"}),
            json!({"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"x"}),
        ];
        let held = [
            json!({"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}),
            json!({"id":"msg_1","type":"message","status":"completed","role":"assistant",
                   "content":[{"type":"output_text","text":"yo","annotations":[],"logprobs":[]}]}),
            json!({"id":"fc_1","type":"function_call","status":"completed","call_id":"c","name":"f","arguments":"{}"}),
            json!({"type":"function_call_output","call_id":"c","output":"ok"}),
            json!({"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"x","content":null}),
        ];
        assert_eq!(same_context(&sent, &held), Ok(()));
    }

    #[test]
    fn differences_are_reported() {
        let a = [json!({"role":"user","content":"hi"})];
        let b = [json!({"role":"user","content":"ho"})];
        assert_eq!(same_context(&a, &b).map_err(|m| m.index), Err(0));
        let err = same_context(&a, &[]).expect_err("shorter");
        assert_eq!((err.index, err.got), (0, None));
        let r1 = [json!({"type":"reasoning","id":"rs_1","summary":[]})];
        let r2 = [json!({"type":"reasoning","id":"rs_2","summary":[]})];
        assert!(same_context(&r1, &r2).is_err());
        let args1 = [json!({"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\":1}"})];
        let args2 = [json!({"type":"function_call","call_id":"c","name":"f","arguments":"{\"a\": 1}"})];
        assert!(same_context(&args1, &args2).is_err());
    }
}

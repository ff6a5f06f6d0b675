//! Parsing a `POST /v1/responses` body once, and building the upstream
//! `response.create` frame from the client's own bytes.
//!
//! The body is parsed into its top-level fields, in order, each kept as the
//! client's raw JSON text; `input` items likewise. Nothing the client sent is
//! re-serialised: unknown fields and item JSON go upstream byte for byte.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ProxyError;

/// Top-level fields that tether sets itself on the upstream frame.
const REPLACED: [&str; 5] = ["type", "input", "stream", "background", "previous_response_id"];

/// A parsed request body, borrowing the client's bytes.
#[derive(Debug)]
pub struct ParsedRequest<'a> {
    fields: Vec<(String, &'a RawValue)>,
    /// `model`, when a string.
    pub model: Option<String>,
    /// `input` as a list of items (the array's elements, each the client's raw JSON).
    pub items: Option<Vec<&'a RawValue>>,
    /// `input` when it is a string.
    pub text: Option<String>,
    /// `previous_response_id`, when the client chains by itself.
    pub previous_response_id: Option<String>,
    /// The client named a `conversation` (server-side state).
    pub conversation: bool,
    /// `store` (default true).
    pub store: bool,
    /// `stream` (default false).
    pub stream: bool,
    /// `background` (WebSocket mode does not support it).
    pub background: bool,
}

/// `input`, read in the same pass as the rest of the body (the items are
/// located once, not re-scanned).
enum Input<'a> {
    Items(Vec<&'a RawValue>),
    Text(String),
    Null,
    Invalid(&'static str),
}

impl<'de> serde::Deserialize<'de> for Input<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Input<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Input<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(32));
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(Input::Items(items))
            }
            fn visit_str<E>(self, v: &str) -> Result<Input<'de>, E> {
                Ok(Input::Text(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Input<'de>, E> {
                Ok(Input::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Input<'de>, E> {
                Ok(Input::Invalid("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Input<'de>, E> {
                Ok(Input::Invalid("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Input<'de>, E> {
                Ok(Input::Invalid("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Input<'de>, E> {
                Ok(Input::Invalid("a number"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Input<'de>, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Input::Invalid("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

struct Fields<'a>(Vec<(String, &'a RawValue)>, Option<Input<'a>>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                let mut input = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k == "input" {
                        input = Some(map.next_value::<Input<'de>>()?);
                    } else {
                        out.push((k, map.next_value::<&'de RawValue>()?));
                    }
                }
                Ok(Fields(out, input))
            }
        }
        d.deserialize_map(V)
    }
}

fn bad(message: String, param: Option<&'static str>) -> ProxyError {
    ProxyError::BadRequest { message, param }
}

impl<'a> ParsedRequest<'a> {
    /// Parses `body`. Errors are the client's: not JSON, not an object, or a
    /// known field of the wrong type.
    pub fn parse(body: &'a [u8]) -> Result<ParsedRequest<'a>, ProxyError> {
        let Fields(fields, input) = serde_json::from_slice::<Fields<'a>>(body).map_err(|e| {
            let what = if e.is_data() { "must be a JSON object" } else { "is not valid JSON" };
            bad(format!("The request body {what} ({e})."), None)
        })?;
        let mut p = ParsedRequest {
            fields,
            model: None,
            items: None,
            text: None,
            previous_response_id: None,
            conversation: false,
            store: true,
            stream: false,
            background: false,
        };
        match input {
            Some(Input::Items(items)) => p.items = Some(items),
            Some(Input::Text(text)) => p.text = Some(text),
            Some(Input::Invalid(what)) => {
                return Err(bad(
                    format!("input must be a string or an array of items, not {what}"),
                    Some("input"),
                ));
            }
            Some(Input::Null) | None => {}
        }
        for (k, v) in &p.fields {
            let text = v.get();
            match k.as_str() {
                "model" => p.model = serde_json::from_str::<String>(text).ok(),
                "previous_response_id" => {
                    p.previous_response_id = serde_json::from_str::<Option<String>>(text).map_err(|_| {
                        bad("previous_response_id must be a string".into(), Some("previous_response_id"))
                    })?
                }
                "conversation" => p.conversation = text != "null",
                "store" => p.store = flag(text, "store", true)?,
                "stream" => p.stream = flag(text, "stream", false)?,
                "background" => p.background = flag(text, "background", false)?,
                _ => {}
            }
        }
        Ok(p)
    }

    /// The `response.create` frame: every field the client sent except those
    /// tether replaces, then `previous_response_id` and `input`. With
    /// `delta = Some((parent, k))` the input is the client's items from `k` on;
    /// otherwise it is the client's whole `input`.
    pub fn create_frame(&self, delta: Option<(&str, usize)>) -> String {
        let mut out = String::with_capacity(self.frame_capacity(delta));
        out.push_str(r#"{"type":"response.create""#);
        for (k, v) in &self.fields {
            if REPLACED.contains(&k.as_str()) {
                continue;
            }
            out.push(',');
            push_json_string(&mut out, k);
            out.push(':');
            out.push_str(v.get());
        }
        let parent = delta.map(|(parent, _)| parent).or(self.previous_response_id.as_deref());
        if let Some(parent) = parent {
            out.push_str(r#","previous_response_id":"#);
            push_json_string(&mut out, parent);
        }
        match (&self.items, &self.text) {
            (Some(items), _) => {
                let start = delta.map_or(0, |(_, k)| k.min(items.len()));
                out.push_str(r#","input":["#);
                for (i, item) in items[start..].iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(item.get());
                }
                out.push(']');
            }
            (None, Some(text)) => {
                out.push_str(r#","input":"#);
                push_json_string(&mut out, text);
            }
            (None, None) => {}
        }
        out.push('}');
        out
    }

    fn frame_capacity(&self, delta: Option<(&str, usize)>) -> usize {
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
        let start = delta.map_or(0, |(_, k)| k);
        let items: usize =
            self.items.as_ref().map_or(0, |items| items.iter().skip(start).map(|i| i.get().len() + 1).sum());
        fields + items + self.text.as_ref().map_or(0, |t| t.len() + 8) + 128
    }

    /// Number of input items (a string input counts as one).
    pub fn item_count(&self) -> usize {
        match (&self.items, &self.text) {
            (Some(items), _) => items.len(),
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }
}

fn flag(text: &str, name: &'static str, default: bool) -> Result<bool, ProxyError> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        "null" => Ok(default),
        _ => Err(bad(format!("{name} must be a boolean"), Some(name))),
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping, without an intermediate Value.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn fields_keep_their_bytes_and_order() {
        let body = br#"{"model":"gpt-x","input":[{"role":"user","content":"hi"},{"type":"function_call_output","call_id":"c1","output":"ok"}],"tools":[{"type":"function","name":"f"}],"stream":true,"metadata":{"b":1,"a":2},"x_unknown":[1, 2]}"#;
        let p = ParsedRequest::parse(body).unwrap();
        assert_eq!(p.model.as_deref(), Some("gpt-x"));
        assert!(p.stream && p.store && !p.background);
        assert_eq!(p.item_count(), 2);
        let fresh = p.create_frame(None);
        assert!(fresh.starts_with(r#"{"type":"response.create","model":"gpt-x","tools":[{"type":"function","name":"f"}],"metadata":{"b":1,"a":2},"x_unknown":[1, 2],"input":["#));
        assert!(!fresh.contains("\"stream\""));
        assert_eq!(value(&fresh)["input"], value(std::str::from_utf8(body).unwrap())["input"]);
        let delta = p.create_frame(Some(("resp_1", 1)));
        let v = value(&delta);
        assert_eq!(v["previous_response_id"], "resp_1");
        assert_eq!(v["input"], value(r#"[{"type":"function_call_output","call_id":"c1","output":"ok"}]"#));
        assert!(delta.contains(r#"{"type":"function_call_output","call_id":"c1","output":"ok"}"#));
    }

    #[test]
    fn client_chaining_and_string_input() {
        let p = ParsedRequest::parse(
            br#"{"model":"m","input":"hello","previous_response_id":"resp_9","store":false}"#,
        )
        .unwrap();
        assert_eq!(p.previous_response_id.as_deref(), Some("resp_9"));
        assert!(!p.store);
        assert!(p.items.is_none());
        assert_eq!(p.item_count(), 1);
        let v = value(&p.create_frame(None));
        assert_eq!(v["previous_response_id"], "resp_9");
        assert_eq!(v["input"], "hello");
    }

    #[test]
    fn bad_bodies_are_the_clients_error() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"\"s\"",
            b"{\"input\":5}",
            b"{\"stream\":\"yes\"}",
            b"{\"input\":[1,",
        ] {
            let err = ParsedRequest::parse(body).unwrap_err();
            assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(body));
        }
    }
}

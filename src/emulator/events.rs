//! The Response object and the exact event sequence of a streamed turn
//! (PROTOCOL.md §1): `response.created`, `response.in_progress`, per item
//! `output_item.added` … `output_item.done`, then `response.completed`.

use serde_json::{Map, Value, json};

use super::cost::tokens;

/// Request settings echoed in the Response object, with their defaults.
/// Builds a setting's default value.
type Default = fn() -> Value;

const ECHOED: &[(&str, Default)] = &[
    ("model", || Value::Null),
    ("instructions", || Value::Null),
    ("tools", || json!([])),
    ("tool_choice", || json!("auto")),
    ("parallel_tool_calls", || json!(true)),
    ("max_output_tokens", || Value::Null),
    ("max_tool_calls", || Value::Null),
    ("previous_response_id", || Value::Null),
    ("store", || json!(true)),
    ("metadata", || json!({})),
    ("reasoning", || json!({"effort": null, "summary": null})),
    ("text", || json!({"format": {"type": "text"}})),
    ("temperature", || json!(1.0)),
    ("top_p", || json!(1.0)),
    ("truncation", || json!("disabled")),
    ("prompt_cache_key", || Value::Null),
    ("safety_identifier", || Value::Null),
    ("user", || Value::Null),
    ("service_tier", || json!("auto")),
];

/// A Response object for `body` with the given id, status, output and usage.
pub(crate) fn response_object(
    id: &str,
    created_at: u64,
    status: &str,
    body: &Map<String, Value>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let mut r = Map::new();
    r.insert("id".into(), Value::from(id));
    r.insert("object".into(), Value::from("response"));
    r.insert("created_at".into(), Value::from(created_at));
    r.insert("status".into(), Value::from(status));
    r.insert("background".into(), Value::from(false));
    r.insert("error".into(), Value::Null);
    r.insert("incomplete_details".into(), Value::Null);
    for (key, default) in ECHOED {
        let value = body.get(*key).cloned().unwrap_or_else(default);
        r.insert((*key).into(), value);
    }
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage);
    Value::Object(r)
}

/// The `usage` object.
pub(crate) fn usage(
    input_tokens: u64,
    cached_tokens: u64,
    output_tokens: u64,
    reasoning_tokens: u64,
) -> Value {
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    })
}

/// One event (without `sequence_number`) and the output tokens it carries.
pub(crate) struct Event {
    pub json: Value,
    pub tokens: u64,
}

fn ev(json: Value) -> Event {
    Event { json, tokens: 0 }
}

/// The whole event sequence, from `response.created` to `response.completed`.
pub(crate) fn sequence(in_progress: &Value, completed: &Value, delta: usize) -> Vec<Event> {
    let mut events = vec![
        ev(json!({"type": "response.created", "response": in_progress})),
        ev(json!({"type": "response.in_progress", "response": in_progress})),
    ];
    let output = completed.get("output").and_then(Value::as_array).cloned().unwrap_or_default();
    for (index, item) in output.iter().enumerate() {
        item_events(&mut events, index, item, delta);
    }
    events.push(ev(json!({"type": "response.completed", "response": completed})));
    events
}

fn item_events(events: &mut Vec<Event>, index: usize, item: &Value, delta: usize) {
    let id = item.get("id").cloned().unwrap_or(Value::Null);
    let mut added = item.clone();
    match item.get("type").and_then(Value::as_str) {
        Some("message") => {
            added["status"] = json!("in_progress");
            added["content"] = json!([]);
            events.push(ev(
                json!({"type": "response.output_item.added", "output_index": index, "item": added}),
            ));
            let part = item.pointer("/content/0").cloned().unwrap_or(Value::Null);
            let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
            let empty = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
            let at = json!({"item_id": id, "output_index": index, "content_index": 0});
            events.push(ev(with(&at, json!({"type": "response.content_part.added", "part": empty}))));
            for chunk in chunks(text, delta) {
                events.push(Event {
                    json: with(
                        &at,
                        json!({"type": "response.output_text.delta", "delta": chunk, "logprobs": []}),
                    ),
                    tokens: tokens(chunk.len()),
                });
            }
            events.push(ev(with(
                &at,
                json!({"type": "response.output_text.done", "text": text, "logprobs": []}),
            )));
            events.push(ev(with(&at, json!({"type": "response.content_part.done", "part": part}))));
        }
        Some("function_call") => {
            added["status"] = json!("in_progress");
            added["arguments"] = json!("");
            events.push(ev(
                json!({"type": "response.output_item.added", "output_index": index, "item": added}),
            ));
            let args = item.get("arguments").and_then(Value::as_str).unwrap_or_default();
            let at = json!({"item_id": id, "output_index": index});
            for chunk in chunks(args, delta) {
                events.push(Event {
                    json: with(
                        &at,
                        json!({"type": "response.function_call_arguments.delta", "delta": chunk}),
                    ),
                    tokens: tokens(chunk.len()),
                });
            }
            events.push(ev(with(
                &at,
                json!({"type": "response.function_call_arguments.done", "arguments": args}),
            )));
        }
        _ => {
            events.push(ev(
                json!({"type": "response.output_item.added", "output_index": index, "item": added}),
            ));
        }
    }
    events.push(ev(json!({"type": "response.output_item.done", "output_index": index, "item": item})));
}

/// `base`'s fields followed by `extra`'s (`type` first for readability is not
/// needed: maps are sorted).
fn with(base: &Value, mut extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object(), extra.as_object_mut()) {
        for (k, v) in b {
            e.insert(k.clone(), v.clone());
        }
    }
    extra
}

fn chunks(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

/// The text of an event or object as the service writes it: in every
/// object `type` leads, then `id`, then the other members. Clients and
/// tether may sniff the leading `{"type":"…"` instead of parsing a frame,
/// so the emulator keeps the service's order rather than `Value`'s
/// alphabetical one.
pub(crate) fn wire_text(value: &Value) -> String {
    serde_json::to_string(&Wire { value, extra: None }).unwrap_or_else(|_| value.to_string())
}

/// The text of event `event` numbered `sequence_number`: the same as
/// [`wire_text`] of the event with that member added, without copying the
/// event to add it.
pub(crate) fn event_text(event: &Value, sequence_number: usize) -> String {
    let extra = Some(("sequence_number", sequence_number as u64));
    serde_json::to_string(&Wire { value: event, extra }).unwrap_or_else(|_| {
        let mut copy = event.clone();
        copy["sequence_number"] = Value::from(sequence_number);
        copy.to_string()
    })
}

/// A value in the service's member order, with `extra` merged into the
/// top-level object at the place a `Map` would give it.
struct Wire<'a> {
    value: &'a Value,
    extra: Option<(&'static str, u64)>,
}

impl<'a> Wire<'a> {
    fn inner(value: &'a Value) -> Self {
        Wire { value, extra: None }
    }
}

/// The members of an object in the `Map`'s (sorted) order, with `extra`
/// among them (replacing a member of the same name). A test holds this to
/// the text of the event with the member inserted.
fn members<'a>(
    map: &'a Map<String, Value>,
    extra: Option<(&'static str, u64)>,
) -> impl Iterator<Item = (&'a str, Result<&'a Value, u64>)> {
    let mut extra = extra;
    let mut rest = map.iter().filter(move |(k, _)| extra.is_none_or(|(e, _)| e != k.as_str())).peekable();
    std::iter::from_fn(move || {
        let next = rest.peek().map(|(k, _)| k.as_str());
        match extra {
            Some((e, n)) if next.is_none_or(|k| e < k) => {
                extra = None;
                Some((e, Err(n)))
            }
            _ => rest.next().map(|(k, v)| (k.as_str(), Ok(v))),
        }
    })
}

impl serde::Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.value {
            Value::Object(map) => {
                let added = self.extra.is_some_and(|(e, _)| !map.contains_key(e));
                let mut m = s.serialize_map(Some(map.len() + usize::from(added)))?;
                let leading = ["type", "id"];
                for key in leading {
                    if let Some(v) = map.get(key) {
                        m.serialize_entry(key, &Wire::inner(v))?;
                    }
                }
                for (k, v) in members(map, self.extra).filter(|(k, _)| !leading.contains(k)) {
                    match v {
                        Ok(v) => m.serialize_entry(k, &Wire::inner(v))?,
                        Err(n) => m.serialize_entry(k, &n)?,
                    }
                }
                m.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&Wire::inner(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_turn_has_the_documented_sequence() {
        let msg = json!({"id":"msg_1","type":"message","status":"completed","role":"assistant",
            "content":[{"type":"output_text","text":"abcdef","annotations":[],"logprobs":[]}]});
        let body = Map::new();
        let start = response_object("resp_1", 0, "in_progress", &body, vec![], Value::Null);
        let done = response_object("resp_1", 0, "completed", &body, vec![msg], usage(1, 0, 2, 0));
        let types: Vec<String> = sequence(&start, &done, 4)
            .iter()
            .map(|e| e.json["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
    }

    /// An event's text with its number merged in is the text of the event
    /// with the member inserted: for every event of a turn with a message
    /// and a function call, and for members sorting before and after it.
    #[test]
    fn event_text_is_the_wire_text_of_the_numbered_event() {
        let msg = json!({"id":"msg_1","type":"message","status":"completed","role":"assistant",
            "content":[{"type":"output_text","text":"abcdefghij","annotations":[],"logprobs":[]}]});
        let call = json!({"id":"fc_1","type":"function_call","status":"completed","call_id":"call_1",
            "name":"exec","arguments":"{\"cmd\":\"ls\"}"});
        let body = Map::new();
        let start = response_object("resp_1", 7, "in_progress", &body, vec![], Value::Null);
        let done = response_object("resp_1", 7, "completed", &body, vec![msg, call], usage(5, 2, 9, 0));
        let events = sequence(&start, &done, 3);
        assert!(events.len() > 10);
        for (n, event) in events.iter().enumerate() {
            let mut numbered = event.json.clone();
            numbered["sequence_number"] = Value::from(n);
            assert_eq!(event_text(&event.json, n), wire_text(&numbered), "event {n}");
        }
        // Members on both sides of it, and one it replaces.
        for event in [
            json!({"a": 1, "z": 2}),
            json!({"z": 2}),
            json!({"a": 1}),
            json!({}),
            json!({"type": "t", "sequence_number": 1, "zz": [1]}),
        ] {
            let mut numbered = event.clone();
            numbered["sequence_number"] = Value::from(42);
            assert_eq!(event_text(&event, 42), wire_text(&numbered), "{event}");
        }
    }

    #[test]
    fn wire_text_leads_with_type_then_id_at_every_level() {
        let event = json!({"sequence_number": 3, "type": "response.completed",
            "response": {"object": "response", "id": "resp_1", "output": [{"status": "completed", "id": "msg_1", "type": "message"}]}});
        let text = wire_text(&event);
        assert_eq!(
            text,
            r#"{"type":"response.completed","response":{"id":"resp_1","object":"response","output":[{"type":"message","id":"msg_1","status":"completed"}]},"sequence_number":3}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&text).expect("valid JSON"), event);
    }
}

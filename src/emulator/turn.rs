//! One response, independent of transport: resolve the parent, validate,
//! run the script, price it, and lay out the timed steps a transport plays.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use xxhash_rust::xxh3::xxh3_128;

use super::cost::tokens;
use super::error::ApiError;
use super::events::{self, Event};
use super::fault::{Fault, TurnFaults};
use super::model::{self, Ask};
use super::oracle::Normal;
use super::script::{Script, ScriptError};
use super::state::{ContextRecord, Held, Shared, Transport};
use super::validate;

/// Where the parent of a request was found.
enum Parent {
    None,
    /// The connection's latest response: its context is warm (cached).
    Latest(Arc<Held>),
    /// A `store:true` response rehydrated from storage (slower, not cached).
    Stored(Arc<Held>),
}

/// A validated, generated response, ready to be played.
pub(crate) struct Turn {
    pub response_id: String,
    /// The settings rendered before the items.
    pub prompt: Prompt,
    /// The parent id, when the request continued one.
    pub parent_id: Option<String>,
    pub store: bool,
    /// Parent context ++ input.
    pub context: Vec<Value>,
    /// `context` in normal form.
    pub normal: Normal,
    pub completed: Value,
    pub events: Vec<Event>,
    pub before_first: Duration,
    pub faults: TurnFaults,
}

/// Collects the faults for this request: the next queued one and `metadata.emulator_fault`.
pub(crate) fn gather_faults(
    shared: &Shared,
    transport: Transport,
    body: &Map<String, Value>,
) -> Result<TurnFaults, ApiError> {
    let mut faults = TurnFaults::default();
    let mut kinds = Vec::new();
    if let Some(text) = metadata_str(body, "emulator_fault") {
        let parsed = Fault::parse_list(text)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("metadata.emulator_fault"), None))?;
        kinds.extend(parsed.into_iter().map(|f| f.kind));
    }
    kinds.extend(shared.take_fault(transport));
    shared.with_stats(|s| s.faults_applied += kinds.len() as u64);
    for kind in kinds {
        faults.add(kind);
    }
    Ok(faults)
}

/// A string field of the request's `metadata`.
fn metadata_str<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get("metadata")?.get(key)?.as_str()
}

/// The request settings that shape the turn (not the input).
struct Settings {
    warmup: bool,
    script: Script,
    store: bool,
}

impl Settings {
    fn read(shared: &Shared, body: &Map<String, Value>) -> Result<Settings, ApiError> {
        if body.get("background").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::invalid(
                "background mode is not supported here.",
                Some("background"),
                Some("unsupported_parameter"),
            ));
        }
        let warmup = match body.get("generate") {
            None => false,
            Some(Value::Bool(generate)) if shared.config.warmup => !generate,
            Some(_) => {
                let message = "Unknown parameter: 'generate'.";
                return Err(ApiError::invalid(message, Some("generate"), Some("unknown_parameter")));
            }
        };
        let script = match metadata_str(body, "emulator_script") {
            Some(text) => text
                .parse()
                .map_err(|e: ScriptError| ApiError::invalid(e.to_string(), Some("metadata"), None))?,
            None => shared.config.script,
        };
        let store = body.get("store").and_then(Value::as_bool).unwrap_or(true);
        Ok(Settings { warmup, script, store })
    }
}

/// Finds the parent named by `previous_response_id`: the connection's
/// latest response, else a stored one, else `previous_response_not_found`.
fn resolve_parent(
    shared: &Shared,
    body: &Map<String, Value>,
    latest: Option<&Arc<Held>>,
) -> Result<(Option<String>, Parent), ApiError> {
    let id = match body.get("previous_response_id") {
        None | Some(Value::Null) => return Ok((None, Parent::None)),
        Some(Value::String(id)) => id.clone(),
        Some(_) => {
            let param = Some("previous_response_id");
            return Err(ApiError::invalid("Invalid 'previous_response_id'.", param, None));
        }
    };
    let parent = match latest.filter(|l| l.id == id) {
        Some(l) => Parent::Latest(l.clone()),
        None => Parent::Stored(shared.stored(&id).ok_or_else(|| ApiError::previous_not_found(&id))?),
    };
    Ok((Some(id), parent))
}

/// Input tokens, the cached part, and the tokens rehydrated from storage
/// (`normal`: the context in normal form, `hash` its [`model::context_hash`]).
fn price(shared: &Shared, parent: &Parent, prompt: &Prompt, normal: &Normal, hash: u64) -> (u64, u64, u64) {
    let input_tokens = prompt.tokens + context_tokens(normal.items());
    let (cached, rehydrated) = match parent {
        // The warm state covers the parent only if the settings before it are unchanged.
        Parent::Latest(p) if p.prompt == prompt.hash => (p.tokens, 0),
        // Rehydrated from storage: only the shared prefix cache can help.
        Parent::Latest(p) | Parent::Stored(p) => (prefix_hit(shared, prompt, normal, hash), p.tokens),
        Parent::None => (prefix_hit(shared, prompt, normal, hash), 0),
    };
    (input_tokens, cached, rehydrated)
}

/// Validates and generates one response. `latest` is the connection's
/// latest response (WebSocket only).
pub(crate) fn prepare(
    shared: &Shared,
    transport: Transport,
    body: &Map<String, Value>,
    bytes: usize,
    latest: Option<&Arc<Held>>,
    faults: TurnFaults,
) -> Result<Turn, ApiError> {
    let settings = Settings::read(shared, body)?;
    let input = validate::input_items(body)?;
    let (parent_id, parent) = resolve_parent(shared, body, latest)?;
    validate::check_reasoning(&input, settings.store)?;
    let input_bytes: usize = input.iter().map(text_len).sum();
    let (mut context, validated) = match &parent {
        // Warm state was validated when it was built: only the new items are checked again.
        Parent::Latest(p) => (p.context.clone(), input.len()),
        Parent::Stored(p) => (p.context.clone(), p.context.len() + input.len()),
        Parent::None => (Vec::new(), input.len()),
    };
    context.extend(input);
    validate::check_pairing(&context)?;
    // Normalised and hashed once: the model, the price and the prefix cache
    // all read them.
    let normal = Normal::of(&context);
    let hash = model::context_hash(&normal);

    let generated = if settings.warmup {
        model::Generated { output: Vec::new(), output_tokens: 0, reasoning_tokens: 0 }
    } else {
        let include = body.get("include").and_then(Value::as_array);
        let ask = Ask {
            script: settings.script,
            tools: body.get("tools"),
            encrypted_reasoning: include
                .is_some_and(|inc| inc.iter().any(|v| v == "reasoning.encrypted_content")),
        };
        model::generate(&context, hash, &ask, |p| shared.new_id(p))
    };
    let prompt = Prompt::of(body);
    let (input_tokens, cached, rehydrated) = price(shared, &parent, &prompt, &normal, hash);
    let usage = events::usage(input_tokens, cached, generated.output_tokens, generated.reasoning_tokens);
    let response_id = shared.new_id("resp");
    let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let object = |status, output, usage| {
        events::response_object(&response_id, created_at, status, body, output, usage)
    };
    let completed = object("completed", generated.output, usage);
    let in_progress = object("in_progress", Vec::new(), Value::Null);
    let events = events::sequence(&in_progress, &completed, settings.script.delta);

    shared.with_stats(|s| {
        if parent_id.is_some() {
            s.continuations += 1;
        } else {
            s.fresh += 1;
        }
        s.input_bytes_received += input_bytes as u64;
    });
    shared.record(|| ContextRecord {
        response_id: response_id.clone(),
        transport,
        previous_response_id: parent_id.clone(),
        instructions: body.get("instructions").and_then(Value::as_str).map(str::to_owned),
        context: context.clone(),
    });
    let cost = &shared.config.cost;
    Ok(Turn {
        response_id,
        parent_id,
        store: settings.store,
        prompt,
        before_first: cost.before_first_event(bytes, validated, input_tokens - cached, rehydrated),
        context,
        normal,
        completed,
        events,
        faults,
    })
}

/// The length of `value`'s compact text, counted as it is written, not kept.
fn text_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => value.to_string().len(),
    }
}

/// Tokens of the items whose normal forms are `items`.
fn context_tokens(items: &[String]) -> u64 {
    items.iter().map(|i| tokens(i.len())).sum()
}

/// The settings the service renders before the items: `instructions` and `tools`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prompt {
    pub hash: u128,
    pub tokens: u64,
}

impl Prompt {
    fn of(body: &Map<String, Value>) -> Prompt {
        let mut text = body.get("instructions").map(Value::to_string).unwrap_or_default();
        text.push('\n');
        text.push_str(&body.get("tools").map(Value::to_string).unwrap_or_default());
        let rendered = text.len().saturating_sub(1);
        Prompt { hash: xxh3_128(text.as_bytes()), tokens: tokens(rendered) }
    }
}

/// Cached tokens of a request without a parent: the longest remembered
/// prefix of the prompt, when the context's hash falls within the hit rate.
fn prefix_hit(shared: &Shared, prompt: &Prompt, normal: &Normal, hash: u64) -> u64 {
    let rate = shared.config.cost.http_prefix_cache_hit_rate;
    let bucket = (hash % 10_000) as f64 / 10_000.0;
    match shared.longest_prefix(prompt.hash, normal.items()) {
        Some(k) if bucket < rate => prompt.tokens + context_tokens(&normal.items()[..k]),
        _ => 0,
    }
}

impl Turn {
    /// Records a completed response: the store, the prefix cache, the stats.
    /// Returns what the connection now holds as its latest response.
    pub fn complete(self, shared: &Shared) -> Arc<Held> {
        let Turn { response_id, prompt, store, mut context, mut normal, completed, .. } = self;
        if let Some(Value::Array(output)) = completed.get("output") {
            context.extend(output.iter().cloned());
            normal.extend(output);
        }
        let held = Arc::new(Held {
            id: response_id,
            prompt: prompt.hash,
            tokens: prompt.tokens + context_tokens(normal.items()),
            context,
            response: completed,
        });
        if store {
            shared.store(held.clone());
        }
        shared.remember_prefixes(prompt.hash, normal.items());
        let usage = &held.response["usage"];
        shared.with_stats(|s| {
            s.completed += 1;
            s.input_tokens += usage["input_tokens"].as_u64().unwrap_or(0);
            s.cached_tokens += usage["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
            s.output_tokens += usage["output_tokens"].as_u64().unwrap_or(0);
        });
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The counted length is the length of the compact text.
    #[test]
    fn text_len_counts_the_compact_text() {
        for v in [json!(null), json!("é\n\"x\""), json!({"a": [1, 2.5, {"b": "c"}], "d": true}), json!([])] {
            assert_eq!(text_len(&v), v.to_string().len(), "{v}");
        }
    }

    /// `first_token` delays the first event that carries output tokens, and
    /// only that one: the head events go at once.
    #[test]
    fn first_token_waits_before_the_first_delta_only() {
        let text = "a few words of output, split into several deltas";
        let message = json!({"type": "message", "id": "msg_1", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]});
        let completed = json!({"id": "resp_1", "status": "completed", "output": [message]});
        let in_progress = json!({"id": "resp_1", "status": "in_progress", "output": []});
        let faults = TurnFaults { first_token: Duration::from_millis(7), ..TurnFaults::default() };
        let turn = Turn {
            response_id: "resp_1".into(),
            prompt: Prompt::of(&Map::new()),
            parent_id: None,
            store: false,
            context: Vec::new(),
            normal: Normal::of(&[]),
            events: events::sequence(&in_progress, &completed, 8),
            completed,
            before_first: Duration::ZERO,
            faults,
        };
        let steps = turn.steps(&super::super::cost::CostModel::zero());
        let first_delta = turn.events.iter().position(|e| e.tokens > 0).expect("a delta");
        assert!(first_delta >= 3, "head events come first");
        assert!(turn.events.iter().filter(|e| e.tokens > 0).count() > 1, "several deltas");
        let delays: Vec<Duration> = steps.iter().map(|s| s.delay).collect();
        for (i, d) in delays.iter().enumerate() {
            let want = if i == first_delta { Duration::from_millis(7) } else { Duration::ZERO };
            assert_eq!(*d, want, "step {i}");
        }
    }
}

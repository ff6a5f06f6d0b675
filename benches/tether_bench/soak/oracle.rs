//! The oracle over a long run: every request's `instructions` is a unique
//! tag, so each context the emulator recorded (including those of failed,
//! retried and abandoned requests) names the request it came from. The
//! ledger keeps a hash of each request's `input` in the oracle's normal form
//! (`emulator::oracle::normalize`, not tether's canonical form), and the
//! records are drained and compared as the run goes, so neither side holds
//! every context until the end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tether::emulator::oracle::normalize;
use tether::emulator::{EmulatorHandle, Transport};
use xxhash_rust::xxh3::xxh3_128;

/// Expected contexts of recent requests, by tag, and what the oracle found.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<State>,
    /// One check at a time, so a record taken is compared before anyone looks.
    checking: Mutex<()>,
}

#[derive(Default)]
struct State {
    expected: HashMap<String, Expected>,
    tally: Tally,
}

struct Expected {
    hash: u128,
    items: usize,
    /// When the client was done with the request.
    done: Option<Instant>,
    /// The upstream saw it over plain HTTP (tether's fallback).
    over_http: bool,
}

/// What the oracle found so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Records compared.
    pub checked: u64,
    /// Records whose context differs from the client's input.
    pub mismatches: u64,
    /// Records no known request accounts for.
    pub unmatched: u64,
    /// The first few problems, described.
    pub examples: Vec<String>,
}

impl Tally {
    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

impl Ledger {
    /// Remembers what request `tag` sends (call before sending it).
    pub fn register(&self, tag: &str, input: &[Value]) {
        let expected =
            Expected { hash: context_hash(input), items: input.len(), done: None, over_http: false };
        self.lock().expected.insert(tag.to_string(), expected);
    }

    /// The client is done with `tag` (answered, failed, abandoned or hung).
    pub fn finish(&self, tag: &str) {
        if let Some(e) = self.lock().expected.get_mut(tag) {
            e.done = Some(Instant::now());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the oracle found so far.
    pub fn tally(&self) -> Tally {
        self.lock().tally.clone()
    }

    /// Whether request `tag` reached the upstream over plain HTTP (checks
    /// the records made so far first).
    pub fn went_over_http(&self, tag: &str, emu: &EmulatorHandle) -> bool {
        self.check(emu, None);
        self.lock().expected.get(tag).is_some_and(|e| e.over_http)
    }

    /// Compares every record the emulator made since the last call, then
    /// forgets requests finished more than `keep` ago.
    pub fn check(&self, emu: &EmulatorHandle, keep: Option<Duration>) {
        let _one = self.checking.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Hashing happens outside the ledger's lock; workers register meanwhile.
        let records: Vec<_> =
            emu.take_contexts().into_iter().map(|r| (context_hash(&r.context), r)).collect();
        let mut guard = self.lock();
        let State { expected, tally } = &mut *guard;
        for (got, record) in records {
            let tag = record.instructions.as_deref().unwrap_or("");
            let want = expected.get_mut(tag).map(|e| {
                e.over_http |= record.transport == Transport::Http;
                (e.hash, e.items)
            });
            tally.checked += 1;
            match want {
                Some((hash, _)) if hash == got => {}
                Some((_, items)) => {
                    tally.mismatches += 1;
                    tally.example(format!(
                        "{tag:?}: the upstream rebuilt {} items ({:?}, parent {:?}, response {}) where the client sent {items} different ones",
                        record.context.len(),
                        record.transport,
                        record.previous_response_id,
                        record.response_id,
                    ));
                }
                None => {
                    tally.unmatched += 1;
                    tally.example(format!(
                        "{tag:?}: a context no live request accounts for ({})",
                        record.response_id
                    ));
                }
            }
        }
        if let Some(keep) = keep {
            let now = Instant::now();
            expected.retain(|_, e| e.done.is_none_or(|d| now.duration_since(d) < keep));
        }
    }
}

/// XXH3-128 over the oracle's normal form of `items`, with object keys
/// sorted (so the hash does not depend on serde_json's map order).
pub fn context_hash(items: &[Value]) -> u128 {
    let mut out = String::new();
    for item in normalize(items) {
        canonical(&item, &mut out);
        out.push('\n');
    }
    xxh3_128(out.as_bytes())
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_contexts_hash_equal() {
        let sent = [
            json!({"role": "user", "content": "hi"}),
            json!({"type": "function_call_output", "call_id": "c", "output": "x"}),
        ];
        let held = [
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}),
            json!({"output": "x", "call_id": "c", "type": "function_call_output", "id": "fco_1"}),
        ];
        assert_eq!(context_hash(&sent), context_hash(&held));
        assert_ne!(context_hash(&sent), context_hash(&held[..1]));
        assert_ne!(
            context_hash(&sent),
            context_hash(&[json!({"role": "user", "content": "ho"}), held[1].clone()])
        );
    }
}

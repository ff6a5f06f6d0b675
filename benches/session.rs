//! Session benchmarks: fingerprinting next to a plain parse of the same body,
//! and `plan`/`commit` with 100k live sessions.
//!
//! Bodies: `8KB` (20 items), `100KB` and `1MB` are Codex-shaped (many items, escape-dense text);
//! `1MB_large` is the `tether-bench large` conversation (a few 32 KB tool
//! outputs without escapes, then many small items).

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tether::proxy::request::ParsedRequest;
use tether::session::{
    ChainSeed, Fingerprint, ItemMemo, Plan, SessionLimits, SessionStore, SocketId, SocketStates,
    SocketStatus, TenantId, fingerprint, fingerprint_memo, fingerprint_values,
};

const SEED: ChainSeed<'static> = ChainSeed { tenant: TenantId(42), model: "gpt-5", store: false };

fn text(n: usize, salt: usize) -> String {
    let line = format!("line {salt}: \"quoted\" path/to/file.rs\tvalue é {salt}\n");
    line.repeat(n / line.len() + 1)
}

/// A Codex-shaped request body of about `target` bytes.
fn body(target: usize) -> Vec<u8> {
    let mut input = vec![
        json!({"type": "message", "role": "developer",
        "content": [{"type": "input_text", "text": text(12_000, 0)}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]}),
    ];
    let mut size = 13_000;
    let mut i = 0;
    while size < target {
        i += 1;
        input.push(json!({"type": "reasoning", "id": format!("rs_{i:040}"), "summary": [],
            "content": null, "encrypted_content": "gAAAA".repeat(200)}));
        input.push(json!({"type": "function_call", "id": format!("fc_{i:040}"), "status": "completed",
            "call_id": format!("call_{i:024}"), "name": "exec_command",
            "arguments": format!("{{\"cmd\":\"rg -n foo src/{i}.rs\",\"workdir\":\"/repo\"}}")}));
        input.push(json!({"type": "function_call_output", "id": format!("fco_{i:036}"),
            "call_id": format!("call_{i:024}"), "output": text(2_000, i)}));
        if i % 5 == 0 {
            input.push(json!({"type": "message", "id": format!("msg_{i:040}"), "status": "completed",
                "role": "assistant", "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                "text": text(300, i)}]}));
        }
        size += 4_300;
    }
    let tools: Vec<Value> = (0..9)
        .map(|t| {
            json!({"type": "function", "name": format!("tool_{t}"), "description": text(1_500, t),
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": false})
        })
        .collect();
    let b = json!({"model": "gpt-5", "input": input, "tools": tools, "tool_choice": "auto",
        "parallel_tool_calls": true, "store": false, "stream": true,
        "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
        "prompt_cache_key": "0b7c1e2a-5d1e-4c1a-9b7e-2f1d3c4b5a69"});
    serde_json::to_vec(&b).unwrap_or_default()
}

/// About 8 KB and 20 items, like a turn of `tether-bench overhead`.
fn small_body() -> Vec<u8> {
    let mut input = vec![json!({"type": "message", "role": "developer", "content": text(1_000, 0)})];
    for i in 1..=6 {
        input.push(json!({"type": "reasoning", "id": format!("rs_{i}"), "summary": [], "encrypted_content": "gAAAA".repeat(40)}));
        input.push(json!({"type": "function_call", "id": format!("fc_{i}"), "status": "completed", "call_id": format!("call_{i}"),
            "name": "exec_command", "arguments": format!("{{\"cmd\":\"rg -n foo src/{i}.rs\"}}")}));
        input.push(
            json!({"type": "function_call_output", "call_id": format!("call_{i}"), "output": text(500, i)}),
        );
    }
    input.push(json!({"role": "user", "content": "go on"}));
    serde_json::to_vec(&json!({"model": "gpt-5", "input": input, "store": false, "stream": false}))
        .unwrap_or_default()
}

/// The body of `tether-bench large` at about `target` bytes.
fn large_body(target: usize) -> Vec<u8> {
    let chunk = tether::agent::filler("large", 32_000);
    let mut input = vec![json!({"type": "message", "role": "user", "content": "grow"})];
    let mut i = 0;
    loop {
        i += 1;
        let output = if i <= 31 { chunk.clone() } else { format!("ok {i}") };
        input.push(json!({"type": "function_call", "id": format!("fc_{i:040}"), "status": "completed",
            "call_id": format!("call_{i:024}"), "name": "exec_command",
            "arguments": "{\"cmd\":\"ls\",\"workdir\":\"/repo/some/dir/x\"}"}));
        input.push(
            json!({"type": "function_call_output", "call_id": format!("call_{i:024}"), "output": output}),
        );
        let b = json!({"model": "m", "input": input, "store": false,
            "metadata": {"emulator_script": "tools=1000,args=40"}});
        let bytes = serde_json::to_vec(&b).unwrap_or_default();
        if bytes.len() >= target && i > 61 {
            return bytes;
        }
    }
}

#[derive(Deserialize)]
struct InputOnly<'a> {
    #[serde(borrow)]
    input: Vec<&'a RawValue>,
}

fn fingerprinting(c: &mut Criterion) {
    for (name, bytes) in [
        ("8KB", small_body()),
        ("100KB", body(100_000)),
        ("1MB", body(1_000_000)),
        ("1MB_large", large_body(1_000_000)),
    ] {
        let mut g = c.benchmark_group(format!("fingerprint_{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("parse_value_only", |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes)).map(|v| v.is_object()))
        });
        g.bench_function("parse_map_raw_then_fingerprint", |b| {
            b.iter(|| {
                let map: HashMap<&str, &RawValue> = serde_json::from_slice(black_box(&bytes)).ok()?;
                let items: Vec<&RawValue> = serde_json::from_str(map.get("input")?.get()).ok()?;
                fingerprint(&SEED, &items).ok().map(|f| f.tip())
            })
        });
        g.bench_function("parse_request_only", |b| {
            b.iter(|| ParsedRequest::parse(black_box(&bytes)).map(|p| p.item_count()).ok())
        });
        g.bench_function("parse_request_then_fingerprint", |b| {
            b.iter(|| {
                let p = ParsedRequest::parse(black_box(&bytes)).ok()?;
                fingerprint(&SEED, p.items.as_deref()?).ok().map(|f| f.tip())
            })
        });
        if let Ok(p) = ParsedRequest::parse(&bytes) {
            let items = p.items.unwrap_or_default();
            g.bench_function("fingerprint_only", |b| {
                b.iter(|| fingerprint(&SEED, black_box(&items)).ok().map(|f| f.tip()))
            });
            // Every item already in the memo: a resent history.
            let memo = Mutex::new(ItemMemo::default());
            g.bench_function("fingerprint_memo_warm", |b| {
                b.iter(|| fingerprint_memo(&SEED, black_box(&items), &memo).ok().map(|f| f.tip()))
            });
        }
        g.bench_function("parse_struct_raw_only", |b| {
            b.iter(|| serde_json::from_slice::<InputOnly<'_>>(black_box(&bytes)).map(|b| b.input.len()))
        });
        g.bench_function("parse_struct_raw_then_fingerprint", |b| {
            b.iter(|| {
                let body: InputOnly<'_> = serde_json::from_slice(black_box(&bytes)).ok()?;
                fingerprint(&SEED, &body.input).ok().map(|f| f.tip())
            })
        });
        g.bench_function("parse_value_then_fingerprint", |b| {
            b.iter(|| {
                let v: BTreeMap<String, Value> = serde_json::from_slice(black_box(&bytes)).ok()?;
                let Some(Value::Array(items)) = v.get("input") else {
                    return None;
                };
                fingerprint_values(&SEED, items).ok().map(|f| f.tip())
            })
        });
        g.finish();
    }
}

struct AllIdle(Vec<String>);

impl SocketStates for AllIdle {
    fn status(&self, socket: SocketId) -> SocketStatus<'_> {
        let latest = self.0.get(socket as usize).map(String::as_str);
        SocketStatus::Idle { latest_response_id: latest }
    }
}

const LIVE: usize = 100_000;
const ITEMS: usize = 24;
const STEPS: usize = 16;

fn fp_of(items: &[Value]) -> Fingerprint {
    fingerprint_values(&SEED, items).unwrap_or_else(|_| unreachable!())
}

fn conversation(i: usize, extra: usize) -> Vec<Value> {
    (0..ITEMS + extra)
        .map(|k| json!({"role": if k % 2 == 0 { "user" } else { "assistant" }, "content": format!("c{i} t{k}")}))
        .collect()
}

fn store_ops(c: &mut Criterion) {
    let limits = SessionLimits { max: LIVE * 2, ttl: Duration::from_secs(3600) };
    let mut store = SessionStore::new(limits);
    let now = Instant::now();
    let mut responses = Vec::with_capacity(LIVE);
    for i in 0..LIVE {
        let fp = fingerprint_values(&SEED, &conversation(i, 0)).unwrap_or_else(|_| unreachable!());
        responses.push(format!("resp_{i:032}"));
        store.commit(None, &fp, &responses[i], i as SocketId, now);
    }
    let sockets = AllIdle(responses);
    let sample: Vec<usize> = (0..1024).map(|j| (j * 7919) % LIVE).collect();
    let requests: Vec<Fingerprint> = sample
        .iter()
        .map(|&i| fingerprint_values(&SEED, &conversation(i, 1)).unwrap_or_else(|_| unreachable!()))
        .collect();
    let misses: Vec<Fingerprint> = sample
        .iter()
        .map(|&i| {
            let mut c = conversation(i, 1);
            c[ITEMS / 2] = json!({"role": "user", "content": "edited"});
            fingerprint_values(&SEED, &c).unwrap_or_else(|_| unreachable!())
        })
        .collect();
    let mut g = c.benchmark_group("store_100k");
    let mut j = 0;
    g.bench_function("plan_continue", |b| {
        b.iter(|| {
            j = (j + 1) % requests.len();
            matches!(store.plan(&requests[j], now, &sockets), Plan::Continue { .. })
        })
    });
    g.bench_function("plan_miss_diagnosed", |b| {
        b.iter(|| {
            j = (j + 1) % misses.len();
            store.plan(&misses[j], now, &sockets)
        })
    });
    // Each sampled session advances STEPS turns (timed), then is reset to its
    // base chain as a new session (untimed) so the loop can repeat.
    let slots = &sample[..256];
    let base: Vec<Fingerprint> = slots.iter().map(|&i| fp_of(&conversation(i, 0))).collect();
    let steps: Vec<Vec<Fingerprint>> =
        (1..=STEPS).map(|s| slots.iter().map(|&i| fp_of(&conversation(i, 2 * s))).collect()).collect();
    let mut ids = vec![0; slots.len()];
    g.bench_function("commit_advance", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                for (slot, &i) in slots.iter().enumerate() {
                    ids[slot] = store.commit(None, &base[slot], "resp_base", i as SocketId, now);
                }
                let t = Instant::now();
                'run: for step in &steps {
                    for (slot, (&i, fp)) in slots.iter().zip(step).enumerate() {
                        if done == iters {
                            break 'run;
                        }
                        black_box(store.commit(Some(ids[slot]), fp, "resp_next", i as SocketId, now));
                        done += 1;
                    }
                }
                total += t.elapsed();
            }
            total
        })
    });
    let mut turn = 0usize;
    g.bench_function("commit_new_session", |b| {
        b.iter(|| {
            turn += 1;
            let k = turn % misses.len();
            store.commit(None, &misses[k], "resp_fresh", (LIVE + k) as SocketId, now)
        })
    });
    g.finish();
    println!("store: {} sessions, ~{} bytes", store.len(), store.approx_memory_bytes());
}

criterion_group!(benches, fingerprinting, store_ops);
criterion_main!(benches);

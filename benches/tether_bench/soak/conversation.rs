//! The load: workers running one conversation after another. Each
//! conversation has a random tenant, length (1–12 turns), script and sizes
//! (small: the run is about many conversations, not large ones);
//! each turn is streaming or not at random, may carry an emulator fault
//! (`metadata.emulator_fault`, so it hits that request and no other), may
//! edit or rewind the history first, and may be abandoned by the client.
//! Some conversations chain by themselves, as a client of the service's own
//! state does: `store:true`, each turn naming the last response in
//! `previous_response_id` and sending only the new items (tether passes
//! those on as they are: route `client_managed`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::oracle::Ledger;
use super::verdict::{self, Exchange, Verdict};
use crate::common::HttpClient;
use tether::emulator::EmulatorHandle;

/// Chance that a stream is abandoned mid-response (or a non-streaming call hung up on early).
const ABANDON: f64 = 0.03;
/// Chance that a later turn edits an earlier item (the user's task) first.
const EDIT: f64 = 0.03;
/// Chance that a later turn rewinds: it re-asks the previous turn.
const REWIND: f64 = 0.02;
/// Chance that a conversation chains by itself (`previous_response_id`).
const CHAINED: f64 = 0.1;

/// Counters shared by every worker.
#[derive(Default)]
pub struct Tally {
    pub conversations: AtomicU64,
    pub finished: AtomicU64,
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub clean: AtomicU64,
    pub bad: AtomicU64,
    pub hung: AtomicU64,
    pub abandoned: AtomicU64,
    pub faults: AtomicU64,
    pub recovered: AtomicU64,
    pub edits: AtomicU64,
    pub rewinds: AtomicU64,
    pub fresh_completed: AtomicU64,
    routes: Mutex<BTreeMap<String, u64>>,
    bad_examples: Mutex<Vec<String>>,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn route(&self, route: &str) {
        let mut r = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *r.entry(route.to_string()).or_default() += 1;
    }

    fn bad(&self, what: String) {
        Tally::add(&self.bad);
        let mut b = self.bad_examples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() < 20 {
            eprintln!("soak: BAD {what}");
            b.push(what);
        }
    }

    /// Answers by `x-tether-route`.
    pub fn routes(&self) -> Value {
        json!(*self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The first bad answers, described.
    pub fn bad_examples(&self) -> Value {
        json!(*self.bad_examples.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// What every worker shares.
pub struct Ctx {
    emu: EmulatorHandle,
    client: HttpClient,
    url: String,
    fault_rate: f64,
    deadline: Duration,
    tenants: usize,
    /// Expected contexts, for the oracle.
    pub ledger: Arc<Ledger>,
    /// The counters.
    pub tally: Arc<Tally>,
    /// Set when load should stop (conversations end after their current turn).
    pub stop: AtomicBool,
}

impl Ctx {
    /// Shared state for the workers.
    pub fn new(
        emu: EmulatorHandle,
        client: HttpClient,
        url: String,
        fault_rate: f64,
        deadline: Duration,
        tenants: usize,
    ) -> Ctx {
        Ctx {
            emu,
            client,
            url,
            fault_rate,
            deadline,
            tenants,
            ledger: Arc::default(),
            tally: Arc::default(),
            stop: AtomicBool::new(false),
        }
    }
}

/// A small, seeded generator (SplitMix64): each worker's choices follow from `--seed`.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// One fault for one request, and whether the request must still succeed
/// (`evict` and `slow` only cost a retry or time).
fn pick_fault(rng: &mut Rng) -> (String, bool) {
    let n = 1 + rng.below(5);
    // Weights out of 100. `no_pong` is rare: each one holds a socket and a
    // worker for two ping timeouts.
    match rng.below(100) {
        0..=7 => ("drop_after=0".into(), false),
        8..=19 => (format!("drop_after={n}"), false),
        20..=29 => (format!("error_at={}:500:server_error", n - 1), false),
        30..=33 => (format!("error_at={}:429:rate_limit_exceeded", n - 1), false),
        34..=41 => (format!("failed_at={}", n - 1), false),
        42..=46 => ("rate_limit".into(), false),
        47..=58 => ("evict".into(), true),
        59..=66 => (format!("slow={}", 2 + rng.below(20)), true),
        67..=76 => (format!("malformed_at={}", n - 1), false),
        77..=86 => (format!("close=1011@{}", n - 1), false),
        87..=96 => (format!("close=1000@{}", n - 1), false),
        _ => ("no_pong".into(), false),
    }
}

/// Whether the fault makes the upstream's own answer broken (cut or not JSON).
fn breaks_body(fault: &Option<(String, bool)>) -> bool {
    fault
        .as_ref()
        .is_some_and(|(f, _)| ["drop_after", "close", "malformed_at"].iter().any(|k| f.starts_with(k)))
}

/// Runs conversations until told to stop.
pub async fn worker(ctx: Arc<Ctx>, seed: u64, w: usize) {
    let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut c = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        Tally::add(&ctx.tally.conversations);
        Conversation::new(&mut rng, &ctx, format!("{w}.{c}")).run(&ctx, &mut rng).await;
        c += 1;
    }
}

struct Conversation {
    id: String,
    key: String,
    history: Vec<Value>,
    /// `history.len()` before the latest response's output was added.
    before_last: usize,
    settings: Value,
    turns: usize,
    /// For a conversation that chains by itself: the last response and how
    /// much of `history` it accounts for.
    chain: Option<Chain>,
}

#[derive(Default)]
struct Chain {
    last: Option<String>,
    upto: usize,
}

/// How a turn ended, for the conversation.
enum Next {
    /// The model asked for tools: next turn.
    More,
    /// The final answer came.
    Done,
    /// An error: the next turn resends the same history.
    Retry,
    /// Abandoned or hung: this conversation is over.
    Quit,
}

impl Conversation {
    fn new(rng: &mut Rng, ctx: &Ctx, id: String) -> Conversation {
        // 1–12 turns, short ones more often (the smaller of two draws:
        // mean ~4.2), so a run gets through many conversations.
        let tools = rng.below(12).min(rng.below(12));
        let reasoning = rng.chance(0.25);
        let chained = rng.chance(CHAINED);
        let script = format!(
            "tools={tools},args={},answer={},delta=40{}",
            20 + rng.below(80),
            40 + rng.below(200),
            if reasoning { ",reasoning=1" } else { "" }
        );
        let mut settings = json!({
            "model": "gpt-soak",
            "store": chained || rng.chance(0.1),
            "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}],
            "metadata": {"emulator_script": script},
        });
        if reasoning {
            settings["include"] = json!(["reasoning.encrypted_content"]);
        }
        let history = vec![
            json!({"type": "message", "role": "developer", "content": [{"type": "input_text",
                   "text": tether::agent::filler(&format!("soak-{id}"), 100 + rng.below(700))}]}),
            json!({"type": "message", "role": "user", "content": format!("task {id}: {}", rng.next())}),
        ];
        Conversation {
            key: format!("Bearer sk-soak-{}", rng.below(ctx.tenants)),
            id,
            history,
            before_last: 0,
            settings,
            turns: tools + 1,
            chain: chained.then(Chain::default),
        }
    }

    async fn run(mut self, ctx: &Ctx, rng: &mut Rng) {
        let mut after_error = false;
        // Errors do not end a conversation, but they cannot make it endless either.
        for attempt in 0..self.turns + 6 {
            if ctx.stop.load(Ordering::Relaxed) {
                return;
            }
            match self.turn(ctx, rng, attempt, after_error).await {
                Next::More => after_error = false,
                Next::Retry => after_error = true,
                Next::Done => {
                    Tally::add(&ctx.tally.finished);
                    return;
                }
                Next::Quit => return,
            }
        }
    }

    async fn turn(&mut self, ctx: &Ctx, rng: &mut Rng, attempt: usize, after_error: bool) -> Next {
        let t = &ctx.tally;
        let mut edited = false;
        // A client that chains by itself does not rewrite the service's history.
        if self.before_last > 0 && !after_error && self.chain.is_none() {
            if rng.chance(EDIT) {
                self.history[1] = json!({"type": "message", "role": "user",
                                         "content": format!("task {} (edited at {attempt}): {}", self.id, rng.next())});
                edited = true;
                Tally::add(&t.edits);
            } else if rng.chance(REWIND) {
                self.history.truncate(self.before_last);
                Tally::add(&t.rewinds);
            }
        }
        let stream = rng.chance(0.5);
        // The turn after an error carries no fault: it must work.
        let fault = (!after_error && rng.chance(ctx.fault_rate)).then(|| pick_fault(rng));
        let abandon = rng.chance(ABANDON).then(|| 1 + rng.below(4));
        let tag = format!("soak {}.{attempt}", self.id);
        let mut body = self.settings.clone();
        body["instructions"] = json!(tag);
        body["stream"] = json!(stream);
        body["input"] = json!(self.history);
        let parent = self.chain.as_ref().and_then(|c| Some((c.last.clone()?, c.upto)));
        if let Some((id, upto)) = &parent {
            body["previous_response_id"] = json!(id);
            body["input"] = json!(self.history[*upto..]);
        }
        if let Some((f, _)) = &fault {
            body["metadata"]["emulator_fault"] = json!(f);
            Tally::add(&t.faults);
        }
        ctx.ledger.register(&tag, &self.history);
        Tally::add(&t.requests);
        let body = Bytes::from(body.to_string());
        let outcome = match (abandon, stream) {
            // Hang up on a non-streaming call almost at once (tether may not even have answered).
            (Some(ms), false) => {
                let early = Duration::from_millis(ms as u64 - 1);
                tokio::time::timeout(early, exchange(ctx, &self.key, body, None))
                    .await
                    .unwrap_or(Ok(Answer::Abandoned))
            }
            (events, _) => tokio::time::timeout(ctx.deadline, exchange(ctx, &self.key, body, events))
                .await
                .unwrap_or(Ok(Answer::Hung)),
        };
        ctx.ledger.finish(&tag);
        let x = match outcome {
            Ok(Answer::Full(x)) => x,
            Ok(Answer::Abandoned) => {
                Tally::add(&t.abandoned);
                return Next::Quit;
            }
            Ok(Answer::Hung) => {
                Tally::add(&t.hung);
                eprintln!("soak: HUNG {tag} (stream {stream}, fault {fault:?})");
                return Next::Quit;
            }
            Err(e) => {
                // The HTTP fallback relays the upstream's answer as it comes: an
                // upstream cut before tether's client got the headers is a cut
                // connection for the client too. Anywhere else it is tether's.
                let relayed = breaks_body(&fault) && ctx.ledger.went_over_http(&tag, &ctx.emu);
                if relayed {
                    Tally::add(&t.clean);
                    t.route("http_fallback (connection cut)");
                } else {
                    t.bad(format!("{tag}: transport error {e:#} (stream {stream}, fault {fault:?})"));
                }
                return Next::Retry;
            }
        };
        let route = x.route.clone().unwrap_or_else(|| "none".into());
        t.route(&route);
        let verdict = match verdict::judge(&x, stream) {
            Verdict::Ok(resp) if resp["instructions"] != json!(tag) => {
                Verdict::Bad(format!("the response of another request ({})", resp["instructions"]))
            }
            // The client's own parent, or none: never tether's.
            Verdict::Ok(resp) if resp["previous_response_id"] != json!(parent.as_ref().map(|p| &p.0)) => {
                Verdict::Bad(format!(
                    "previous_response_id {} where the client sent {:?}",
                    resp["previous_response_id"],
                    parent.as_ref().map(|p| &p.0)
                ))
            }
            // A client's own chain is passed on as it is, never re-planned by tether.
            Verdict::Ok(_)
                if parent.is_some() && !["client_managed", "http_fallback"].contains(&route.as_str()) =>
            {
                Verdict::Bad(format!("a client-chained request took route {route}"))
            }
            Verdict::Ok(_) if edited && route == "continue" => {
                Verdict::Bad("continued a chain after the history was edited".into())
            }
            Verdict::Clean(why) if fault.as_ref().is_none_or(|f| f.1) => {
                Verdict::Bad(format!("error without a fault that causes one: {why}"))
            }
            // The fallback relays the upstream's bytes untouched, broken ones included.
            Verdict::Bad(why) if route == "http_fallback" && breaks_body(&fault) => {
                Verdict::Clean(format!("relayed from the upstream: {why}"))
            }
            v => v,
        };
        match verdict {
            Verdict::Ok(resp) => {
                Tally::add(&t.ok);
                if after_error {
                    Tally::add(&t.recovered);
                }
                if route == "fresh" {
                    Tally::add(&t.fresh_completed);
                }
                self.append(&resp, rng)
            }
            Verdict::Clean(_) => {
                Tally::add(&t.clean);
                Next::Retry
            }
            Verdict::Bad(why) => {
                t.bad(format!("{tag}: {why} (stream {stream}, route {route}, fault {fault:?})"));
                Next::Retry
            }
        }
    }

    /// Echoes the output into the history and answers its tool calls.
    fn append(&mut self, resp: &Value, rng: &mut Rng) -> Next {
        self.before_last = self.history.len();
        let output = resp["output"].as_array().cloned().unwrap_or_default();
        let mut calls = Vec::new();
        for item in output {
            if item["type"] == "function_call" {
                calls.push(item["call_id"].clone());
            }
            self.history.push(item);
        }
        if let Some(chain) = &mut self.chain {
            chain.last = resp["id"].as_str().map(str::to_string);
            chain.upto = self.history.len();
        }
        for call_id in &calls {
            let text = tether::agent::filler(&format!("{}-{call_id}", self.id), 30 + rng.below(250));
            self.history.push(json!({"type": "function_call_output", "call_id": call_id, "output": text}));
        }
        if calls.is_empty() { Next::Done } else { Next::More }
    }
}

/// An answer read to its end, abandoned on purpose, or past its deadline.
enum Answer {
    Full(Exchange),
    Abandoned,
    Hung,
}

/// One POST. With `abandon_after = Some(n)`, the client hangs up once it has
/// read `n` events of a streamed answer.
async fn exchange(ctx: &Ctx, key: &str, body: Bytes, abandon_after: Option<usize>) -> anyhow::Result<Answer> {
    let req = http::Request::post(&ctx.url)
        .header("content-type", "application/json")
        .header("authorization", key)
        .body(Full::new(body))?;
    let resp = ctx.client.request(req).await?;
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut x = Exchange {
        status: resp.status().as_u16(),
        route: header("x-tether-route"),
        content_type: header("content-type").unwrap_or_default(),
        ..Exchange::default()
    };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    x.body.extend_from_slice(&data);
                }
            }
            Err(e) => {
                x.cut = Some(e.to_string());
                break;
            }
        }
        if let Some(n) = abandon_after
            && x.body.windows(2).filter(|w| w == b"\n\n").count() >= n
        {
            return Ok(Answer::Abandoned);
        }
    }
    Ok(Answer::Full(x))
}

//! `async-openai` (a real, unmodified Rust client) through tether to the
//! in-process emulator, compared with the same client pointed at the
//! emulator directly: `responses().create` and `create_stream`, a two-turn
//! text chat and a tool loop, and a 400 and a 429 as `OpenAIError::ApiError`.
//! Each run asserts the same output both ways, a fresh first call and a
//! continuation for every later one, and zero oracle mismatches between
//! what the client sent and what the emulator reconstructed.

mod common;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::responses::{CreateResponse, InputItem, OutputItem, Response, ResponseStreamEvent};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tether::emulator::{self, EmulatorConfig, EmulatorHandle, oracle};

/// What the client saw, compared between direct and through tether.
type Transcript = Vec<Vec<String>>;

/// One client against one base URL; keeps every request body it sent.
struct Run {
    client: Client<OpenAIConfig>,
    stream: bool,
    sent: Vec<Value>,
}

impl Run {
    fn new(base: &str, stream: bool) -> Self {
        let config = OpenAIConfig::new().with_api_base(base).with_api_key("sk-clients-test");
        Run { client: Client::with_config(config), stream, sent: Vec::new() }
    }

    /// One model call. The request is built from JSON into the client's own
    /// `CreateResponse`, which is also what it serialises onto the wire.
    async fn call(&mut self, body: Value) -> Result<Response, OpenAIError> {
        let request: CreateResponse = serde_json::from_value(body).expect("CreateResponse");
        let mut wire = serde_json::to_value(&request).expect("serialise");
        if self.stream {
            wire["stream"] = json!(true);
        }
        self.sent.push(wire);
        if !self.stream {
            return self.client.responses().create(request).await;
        }
        let mut events = self.client.responses().create_stream(request).await?;
        let (mut text, mut done) = (String::new(), None);
        while let Some(event) = events.next().await {
            match event? {
                ResponseStreamEvent::ResponseOutputTextDelta(d) => text.push_str(&d.delta),
                ResponseStreamEvent::ResponseCompleted(c) => done = Some(c.response),
                _ => {}
            }
        }
        let done = done.expect("stream ended without response.completed");
        assert_eq!(text, done.output_text().unwrap_or_default(), "deltas add up to the final text");
        Ok(done)
    }
}

fn describe(resp: &Response) -> Vec<String> {
    resp.output
        .iter()
        .map(|item| match item {
            OutputItem::FunctionCall(c) => format!("call {} {} {}", c.name, c.call_id, c.arguments),
            OutputItem::Message(_) => format!("text {}", resp.output_text().unwrap_or_default()),
            other => format!("other {other:?}"),
        })
        .collect()
}

/// The response's output as input items for the next call, via the client's own types.
fn as_input(resp: &Response) -> Vec<Value> {
    resp.output
        .iter()
        .map(|item| {
            let v = serde_json::to_value(item).expect("output item");
            let typed: InputItem = serde_json::from_value(v).expect("output item as InputItem");
            serde_json::to_value(typed).expect("input item")
        })
        .collect()
}

async fn chat(run: &mut Run) -> Transcript {
    let mut history = vec![json!({"role": "user", "content": "Say something about sockets."})];
    let mut transcript = Vec::new();
    for follow_up in ["And about tokio?", "Thanks. One more line?"] {
        let body = json!({"model": "gpt-5", "instructions": "Be brief.", "input": history,
                          "metadata": {"emulator_script": "tools=0,answer=120"}});
        let resp = run.call(body).await.expect("chat call");
        transcript.push(describe(&resp));
        history.extend(as_input(&resp));
        history.push(json!({"role": "user", "content": follow_up}));
    }
    transcript
}

async fn tool_loop(run: &mut Run) -> Transcript {
    let tool = |name: &str| {
        json!({"type": "function", "name": name, "description": "a tool", "strict": false,
               "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}})
    };
    let mut history = vec![json!({"role": "user", "content": "Look around the repository."})];
    let mut transcript = Vec::new();
    loop {
        let body = json!({"model": "gpt-5", "instructions": "You are a coding agent.", "input": history,
                          "tools": [tool("run_shell"), tool("read_file")],
                          "metadata": {"emulator_script": "tools=4,args=80"}});
        let resp = run.call(body).await.expect("tool call");
        transcript.push(describe(&resp));
        history.extend(as_input(&resp));
        let calls: Vec<_> = resp
            .output
            .iter()
            .filter_map(|i| match i {
                OutputItem::FunctionCall(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            return transcript;
        }
        for c in calls {
            let words = c.arguments.split(' ').count();
            history.push(json!({"type": "function_call_output", "call_id": c.call_id,
                                "output": format!("{}: {words} words", c.name)}));
        }
    }
}

async fn stack() -> (String, EmulatorHandle, common::Tether) {
    let (addr, emu) = emulator::spawn(EmulatorConfig::default()).await.expect("emulator");
    let upstream = format!("http://{addr}/v1");
    let tether = common::start(common::config_for(&upstream)).await;
    (upstream, emu, tether)
}

/// Sessions tether reports: (id, fresh, continues).
async fn sessions(tether: &common::Tether) -> Vec<(u64, u64, u64)> {
    let (status, body) = common::get(&format!("http://{}/debug/sessions", tether.addr)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("sessions json");
    let n = |s: &Value, k: &str| s[k].as_u64().unwrap_or_default();
    v["sessions"]
        .as_array()
        .map(|a| a.iter().map(|s| (n(s, "id"), n(s, "fresh"), n(s, "continues"))).collect())
        .unwrap_or_default()
}

/// Every new oracle record equals, item by item, the input the client sent.
fn assert_oracle(emu: &EmulatorHandle, from: usize, sent: &[Value]) {
    let records = emu.contexts();
    let records = &records[from..];
    assert_eq!(records.len(), sent.len(), "one context per request");
    for (n, (body, record)) in sent.iter().zip(records).enumerate() {
        let input = match &body["input"] {
            Value::String(s) => vec![json!({"role": "user", "content": s})],
            Value::Array(items) => items.clone(),
            other => panic!("input {other}"),
        };
        if let Err(m) = oracle::same_context(&input, &record.context) {
            panic!("request {n}: {m}");
        }
        assert_eq!(body["instructions"].as_str(), record.instructions.as_deref(), "request {n}");
    }
}

async fn same_both_ways<F>(scenario: F, stream: bool, calls: usize)
where
    F: for<'a> AsyncFn(&'a mut Run) -> Transcript,
{
    let (upstream, emu, tether) = stack().await;
    let mut direct = Run::new(&upstream, stream);
    let want = scenario(&mut direct).await;
    assert_eq!(direct.sent.len(), calls);
    assert_oracle(&emu, 0, &direct.sent);

    let records = emu.contexts().len();
    let continuations = emu.stats().continuations;
    let mut through = Run::new(&tether.base(), stream);
    let got = scenario(&mut through).await;
    assert_eq!(got, want, "same output through tether as directly");
    assert_eq!(through.sent.len(), calls);
    assert_eq!(emu.stats().continuations - continuations, calls as u64 - 1, "continued from call 2 on");
    let s = sessions(&tether).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].1, s[0].2), (1, calls as u64 - 1), "one fresh turn, then continues");
    assert_oracle(&emu, records, &through.sent);
}

#[tokio::test]
async fn json_two_turn_text() {
    same_both_ways(chat, false, 2).await;
}

#[tokio::test]
async fn stream_two_turn_text() {
    same_both_ways(chat, true, 2).await;
}

#[tokio::test]
async fn json_tool_loop() {
    same_both_ways(tool_loop, false, 5).await;
}

#[tokio::test]
async fn stream_tool_loop() {
    same_both_ways(tool_loop, true, 5).await;
}

/// (status, type, code) of the error a call ends with.
async fn api_error(base: &str, stream: bool, metadata: Value) -> (u16, Option<String>, Option<String>) {
    let mut run = Run::new(base, stream);
    let body = json!({"model": "gpt-5", "input": "hi", "metadata": metadata});
    match run.call(body).await {
        Err(OpenAIError::ApiError(e)) => (e.status_code.as_u16(), e.api_error.r#type, e.api_error.code),
        other => panic!("expected OpenAIError::ApiError, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_400_and_429_arrive_as_api_errors() {
    let (upstream, _emu, tether) = stack().await;
    for stream in [false, true] {
        for (metadata, status) in [
            (json!({"emulator_script": "no_such_knob=1"}), 400),
            (json!({"emulator_fault": "rate_limit"}), 429),
        ] {
            let direct = api_error(&upstream, stream, metadata.clone()).await;
            assert_eq!(direct.0, status);
            assert_eq!(api_error(&tether.base(), stream, metadata).await, direct, "stream={stream}");
        }
    }
}

//! The reference agent loop: a stateless HTTP client shaped like Codex
//! (PROTOCOL.md §4), used by the managed-path acceptance tests, `tether demo`
//! and `tether-bench loop`.
//!
//! Every request carries the whole history: a ~3,000-token `developer`
//! message at the head of `input`, the user's task, then every output item
//! and tool result so far. Settings (`tools`, `include`, `reasoning`, …) are
//! resent every turn. Output items are echoed back the way real clients do:
//! parsed and re-serialised (keys in another order), server ids kept.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// Tool calls before the final answer (turns = tool_calls + 1).
    pub tool_calls: usize,
    /// Approximate size of the developer message, in bytes (~4 bytes a token).
    pub system_prompt_bytes: usize,
    /// Approximate size of each tool output, in bytes.
    pub tool_output_bytes: usize,
    /// Use `stream: true` (as Codex does).
    pub stream: bool,
    /// A tag that makes this loop's conversation distinct from others'.
    pub tag: String,
    /// Bearer key.
    pub api_key: String,
    /// Model name.
    pub model: String,
}

impl Default for LoopSpec {
    fn default() -> Self {
        LoopSpec {
            tool_calls: 29,
            system_prompt_bytes: 12_000,
            tool_output_bytes: 2_000,
            stream: true,
            tag: "loop-0".into(),
            api_key: "sk-tether-demo".into(),
            model: "gpt-emulated".into(),
        }
    }
}

/// What one turn cost.
#[derive(Debug, Clone, Default)]
pub struct TurnReport {
    /// The response id the client received.
    pub response_id: String,
    /// HTTP status.
    pub status: u16,
    /// Bytes of the request body.
    pub request_bytes: usize,
    /// Bytes of `input` in the request.
    pub input_bytes: usize,
    /// Bytes of the items that are new this turn (what a delta carries).
    pub new_input_bytes: usize,
    /// Items in `input`.
    pub items: usize,
    /// Items new this turn (what a delta carries).
    pub new_items: usize,
    /// `usage.input_tokens`.
    pub input_tokens: u64,
    /// `usage.input_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// `x-tether-route` when the call went through tether.
    pub route: Option<String>,
    /// The `input` sent (for the oracle).
    pub input: Vec<Value>,
}

/// A whole loop's result.
#[derive(Debug, Clone, Default)]
pub struct LoopReport {
    /// One entry per model call.
    pub turns: Vec<TurnReport>,
    /// The final answer's text.
    pub final_text: String,
}

/// Errors of the loop client.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Transport failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// A non-200 answer.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
    /// The answer could not be understood.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// Deterministic filler text of about `len` bytes.
pub fn filler(seed: &str, len: usize) -> String {
    const WORDS: [&str; 16] = [
        "alpha", "binary", "cursor", "delta", "engine", "format", "gamma", "handle", "index", "join",
        "kernel", "lambda", "module", "node", "offset", "parser",
    ];
    let mut h = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
    let mut out = String::with_capacity(len + 8);
    while out.len() < len {
        h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(WORDS[(h >> 60) as usize]);
        out.push(' ');
    }
    out.truncate(len);
    out
}

/// The Codex-like settings resent every turn (~1 KB of tools).
fn settings(spec: &LoopSpec) -> Value {
    let tool = |name: &str, desc: &str| {
        json!({"type": "function", "name": name, "description": desc, "strict": false,
               "parameters": {"type": "object", "properties": {"cmd": {"type": "string", "description": "The command to run."},
                                "workdir": {"type": "string"}}, "required": ["cmd"], "additionalProperties": false}})
    };
    json!({
        "model": spec.model,
        "tools": [tool("exec_command", "Runs a shell command and returns its output."),
                  tool("apply_patch", "Applies a patch to files in the workspace."),
                  tool("read_file", "Reads a file from the workspace.")],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "store": false,
        "stream": spec.stream,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": spec.tag,
        "reasoning": {"summary": "auto"},
        "metadata": {"emulator_script": format!("tools={},reasoning=1", spec.tool_calls)},
    })
}

/// Runs the loop against `base_url` (`http://host:port/v1`).
pub async fn run(base_url: &str, spec: &LoopSpec) -> Result<LoopReport, AgentError> {
    run_with(base_url, spec, &mut |_| {}).await
}

/// Runs the loop, calling `on_turn` after each model call.
pub async fn run_with(
    base_url: &str,
    spec: &LoopSpec,
    on_turn: &mut (dyn FnMut(&TurnReport) + Send),
) -> Result<LoopReport, AgentError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut history = vec![
        json!({"type": "message", "role": "developer", "content": [{"type": "input_text",
               "text": filler(&format!("{}-system", spec.tag), spec.system_prompt_bytes)}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_text",
               "text": format!("Task {}: fix the failing build and report.", spec.tag)}]}),
    ];
    let mut new_from = 0;
    let mut report = LoopReport::default();
    for _ in 0..=spec.tool_calls + 1 {
        let mut body = settings(spec);
        body["input"] = Value::Array(history.clone());
        let input_bytes = body["input"].to_string().len();
        let new_input_bytes: usize = history[new_from..].iter().map(|i| i.to_string().len() + 1).sum();
        let bytes = serde_json::to_vec(&body).map_err(|e| AgentError::Protocol(e.to_string()))?;
        let started = Instant::now();
        let (status, route, response) =
            call(&client, base_url, &spec.api_key, bytes.clone(), spec.stream).await?;
        let usage = &response["usage"];
        report.turns.push(TurnReport {
            response_id: response["id"].as_str().unwrap_or_default().to_string(),
            status,
            request_bytes: bytes.len(),
            input_bytes,
            new_input_bytes,
            items: history.len(),
            new_items: history.len() - new_from,
            input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
            cached_tokens: usage["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
            elapsed: started.elapsed(),
            route,
            input: history.clone(),
        });
        if let Some(turn) = report.turns.last() {
            on_turn(turn);
        }
        new_from = history.len();
        let output = response["output"].as_array().cloned().unwrap_or_default();
        let mut calls = Vec::new();
        for item in output {
            if item["type"] == "function_call" {
                calls.push(item["call_id"].as_str().unwrap_or_default().to_string());
            }
            if item["type"] == "message" {
                report.final_text = item["content"][0]["text"].as_str().unwrap_or_default().to_string();
            }
            history.push(item);
        }
        if calls.is_empty() {
            return Ok(report);
        }
        for call_id in calls {
            let output = filler(&format!("{}-{call_id}", spec.tag), spec.tool_output_bytes);
            history.push(json!({"type": "function_call_output", "call_id": call_id, "output": output}));
        }
    }
    Err(AgentError::Protocol(format!("no final answer after {} turns", spec.tool_calls + 2)))
}

/// One `POST /responses`: returns status, tether's route header, and the Response object.
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    base_url: &str,
    key: &str,
    body: Vec<u8>,
    stream: bool,
) -> Result<(u16, Option<String>, Value), AgentError> {
    let req = http::Request::post(format!("{base_url}/responses"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| AgentError::Transport(e.to_string()))?;
    let resp = client.request(req).await.map_err(|e| AgentError::Transport(e.to_string()))?;
    let status = resp.status().as_u16();
    let route = resp.headers().get("x-tether-route").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes =
        resp.into_body().collect().await.map_err(|e| AgentError::Transport(e.to_string()))?.to_bytes();
    if status != 200 {
        return Err(AgentError::Status { status, body: String::from_utf8_lossy(&bytes).into_owned() });
    }
    let response = if stream { completed_from_sse(&bytes)? } else { parse(&bytes)? };
    Ok((status, route, response))
}

fn parse(bytes: &[u8]) -> Result<Value, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| AgentError::Protocol(e.to_string()))
}

/// The Response object of the terminal event of an SSE body.
pub fn completed_from_sse(bytes: &[u8]) -> Result<Value, AgentError> {
    let text = std::str::from_utf8(bytes).map_err(|e| AgentError::Protocol(e.to_string()))?;
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
        let event = parse(data.as_bytes())?;
        match event["type"].as_str() {
            Some("response.completed") => return Ok(event["response"].clone()),
            Some("response.failed" | "response.incomplete" | "error") => {
                return Err(AgentError::Protocol(format!("terminal event: {data}")));
            }
            _ => {}
        }
    }
    Err(AgentError::Protocol("stream ended without response.completed".into()))
}

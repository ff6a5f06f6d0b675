//! Shared helpers for the end-to-end tests: start tether on 127.0.0.1:0 with
//! a given upstream, stop it, and talk to it over real sockets.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tether::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running tether.
pub struct Tether {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Completes when `serve` returns.
    pub done: JoinHandle<()>,
}

impl Tether {
    /// `http://ADDR/v1`.
    pub fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
    /// Asks tether to shut down (like SIGTERM).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A config pointing at `upstream` (an `http://…/v1` base URL), loopback, no API key.
pub fn config_for(upstream: &str) -> Config {
    let mut c = Config::default();
    c.server.listen = ([127, 0, 0, 1], 0).into();
    c.upstream.base_url = upstream.trim_end_matches('/').to_string();
    c.upstream.ws_url = String::new();
    c.upstream.api_key_env = "TETHER_TEST_NO_SUCH_KEY".into();
    // Tests count upstream connections exactly; a spare opened in the
    // background would blur the count. Spares (on by default) have tests
    // of their own that turn them back on.
    c.pool.spares_per_tenant = 0;
    c.with_derived()
}

/// Starts tether with `config` on 127.0.0.1:0.
pub async fn start(config: Config) -> Tether {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(tether::serve(config, listener, async move {
        let _ = rx.await;
    }));
    Tether { addr, stop: Some(tx), done }
}

/// A plain HTTP/1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// POSTs JSON and returns status and body.
pub async fn post_json(url: &str, body: impl Into<Bytes>) -> (u16, Bytes) {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-key")
        .body(Full::new(body.into()))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

/// GETs a URL and returns status and body.
pub async fn get(url: &str) -> (u16, Bytes) {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

/// One sample of tether's `/metrics` at `addr`: `name` as rendered, labels
/// included (`tether_recoveries_total{kind="…"}`). Panics when it is absent.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = get(&format!("http://{addr}/metrics")).await;
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Polls [`metric`] until `ok` holds; panics with the last value after `within`.
pub async fn wait_metric(
    addr: SocketAddr,
    name: &str,
    within: std::time::Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = metric(addr, name).await;
        if ok(v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} is still {v} after {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One conversation driven turn by turn, the way a stateless client does:
/// every request carries the whole history.
pub struct Conversation {
    /// Base URL (`http://…/v1`).
    pub base: String,
    /// The history sent so far (grows with outputs and tool results).
    pub input: Vec<serde_json::Value>,
    /// `stream` flag of each request.
    pub stream: bool,
    /// Bearer key.
    pub key: String,
    /// The script the emulator follows.
    pub script: String,
}

/// What one turn gave back.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `x-tether-route`.
    pub route: Option<String>,
    /// The raw body.
    pub body: Bytes,
}

impl Reply {
    /// The Response object (from JSON, or from the SSE terminal event).
    pub fn response(&self) -> serde_json::Value {
        if self.body.starts_with(b"{") {
            serde_json::from_slice(&self.body).expect("json body")
        } else {
            tether::agent::completed_from_sse(&self.body).expect("completed event")
        }
    }
    /// The SSE event types in order.
    pub fn event_types(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter_map(|l| l.strip_prefix("event: ").map(str::to_string))
            .collect()
    }
}

impl Conversation {
    /// A new conversation under `key`.
    pub fn new(base: &str, key: &str, stream: bool) -> Conversation {
        Conversation {
            base: base.to_string(),
            input: vec![
                serde_json::json!({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are a careful agent. ".repeat(40)}]}),
                serde_json::json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("task for {}", key.chars().rev().collect::<String>())}]}),
            ],
            stream,
            key: key.to_string(),
            script: "tools=20".into(),
        }
    }

    /// The request body of the next turn.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"model": "gpt-emulated", "input": self.input, "store": false, "stream": self.stream,
                           "include": ["reasoning.encrypted_content"],
                           "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}],
                           "metadata": {"emulator_script": self.script}})
    }

    /// Sends the next turn; on 200 absorbs the output and answers tool calls.
    pub async fn turn(&mut self) -> Reply {
        let reply = self.send().await;
        if reply.status == 200 && !reply.event_types().iter().any(|t| t == "error" || t == "response.failed")
        {
            let response = reply.response();
            for item in response["output"].as_array().expect("output") {
                self.input.push(item.clone());
                if item["type"] == "function_call" {
                    self.input.push(serde_json::json!({"type": "function_call_output", "call_id": item["call_id"], "output": "done"}));
                }
            }
        }
        reply
    }

    /// Sends the next turn's request without absorbing anything.
    pub async fn send(&self) -> Reply {
        let req = http::Request::post(format!("{}/responses", self.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.key))
            .body(Full::new(Bytes::from(self.body().to_string())))
            .expect("request");
        let resp = client().request(req).await.expect("response");
        let status = resp.status().as_u16();
        let route = resp.headers().get("x-tether-route").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply { status, route, body }
    }
}

/// Starts the emulator with `config` and tether in front of it.
pub async fn emulator_and_tether(
    emu: tether::emulator::EmulatorConfig,
    tweak: impl FnOnce(&mut Config),
) -> (tether::emulator::EmulatorHandle, Tether) {
    let (addr, handle) = tether::emulator::spawn(emu).await.expect("emulator");
    let mut config = config_for(&format!("http://{addr}/v1"));
    tweak(&mut config);
    (handle, start(config).await)
}

/// Every context the emulator recorded equals what the client sent for it.
pub fn assert_oracle_clean(
    emu: &tether::emulator::EmulatorHandle,
    sent: &[(String, Vec<serde_json::Value>)],
) {
    let contexts = emu.contexts();
    for (id, input) in sent {
        let ctx =
            contexts.iter().find(|c| &c.response_id == id).unwrap_or_else(|| panic!("no record for {id}"));
        if let Err(m) = tether::emulator::oracle::same_context(input, &ctx.context) {
            panic!("context of {id} differs from what the client sent: {m:?}");
        }
    }
}

/// A `tether` process started by a test: killed (if still running) on drop.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the `tether` binary with `args` and `env` (never a `TETHER_CONFIG`
/// from the environment), its stderr to `stderr`; returns it and the address
/// of its first line, `listening on ADDR`.
pub fn spawn_binary(
    args: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (Running, SocketAddr) {
    use std::io::BufRead;
    let mut child = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("TETHER_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tether"),
    );
    let mut line = String::new();
    let stdout = child.0.stdout.take().expect("piped stdout");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("read the address line");
    let addr = line.trim().strip_prefix("listening on ").expect(&line).parse().expect(&line);
    (child, addr)
}

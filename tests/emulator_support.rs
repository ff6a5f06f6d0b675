//! Shared helpers for the emulator tests: start an emulator, talk to it
//! over HTTP (hyper client) and WebSocket (tokio-tungstenite client).
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tether::emulator::{self, EmulatorConfig, EmulatorHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const KEY: &str = "sk-test";

pub async fn start(config: EmulatorConfig) -> Result<(SocketAddr, EmulatorHandle)> {
    Ok(emulator::spawn(config).await?)
}

pub async fn start_default() -> Result<(SocketAddr, EmulatorHandle)> {
    start(EmulatorConfig::default()).await
}

/// A raw HTTP request; returns status and body bytes.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Bytes)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut builder = Request::builder().method(method).uri(path).header("host", "emulator");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = builder.header("content-type", "application/json").body(Full::new(payload))?;
    let response = sender.send_request(req).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// `POST /v1/responses` expecting JSON back.
pub async fn post(addr: SocketAddr, body: &Value) -> Result<(u16, Value)> {
    let (status, bytes) = request(addr, "POST", "/v1/responses", Some(KEY), Some(body)).await?;
    Ok((status, serde_json::from_slice(&bytes).context("json body")?))
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Value)> {
    let (status, bytes) = request(addr, "GET", path, Some(KEY), None).await?;
    Ok((status, serde_json::from_slice(&bytes).context("json body")?))
}

/// Parses an SSE body into (event name, data JSON) pairs, checking the framing.
pub fn parse_sse(text: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut lines = block.lines();
        let event = lines.next().and_then(|l| l.strip_prefix("event: ")).context("event line")?;
        let data = lines.next().and_then(|l| l.strip_prefix("data: ")).context("data line")?;
        if lines.next().is_some() {
            bail!("extra lines in SSE block {block:?}");
        }
        out.push((event.to_owned(), serde_json::from_str(data)?));
    }
    Ok(out)
}

/// `POST /v1/responses` with `stream:true`.
pub async fn post_sse(addr: SocketAddr, body: &Value) -> Result<(u16, String)> {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let (status, bytes) = request(addr, "POST", "/v1/responses", Some(KEY), Some(&body)).await?;
    Ok((status, String::from_utf8(bytes.to_vec())?))
}

pub async fn connect(addr: SocketAddr) -> Result<Ws> {
    connect_with(addr, Some(KEY)).await
}

pub async fn connect_with(addr: SocketAddr, key: Option<&str>) -> Result<Ws> {
    let mut req = format!("ws://{addr}/v1/responses").into_client_request()?;
    if let Some(key) = key {
        req.headers_mut().insert("authorization", format!("Bearer {key}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// The upgrade's refusal status, if the upgrade fails with an HTTP answer.
pub async fn upgrade_status(addr: SocketAddr, key: Option<&str>) -> Result<u16> {
    let mut req = format!("ws://{addr}/v1/responses").into_client_request()?;
    if let Some(key) = key {
        req.headers_mut().insert("authorization", format!("Bearer {key}").parse()?);
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(101),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.into()),
    }
}

pub async fn send_create(ws: &mut Ws, body: &Value) -> Result<()> {
    let mut frame = body.clone();
    frame["type"] = json!("response.create");
    ws.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// Reads frames until a terminal one (completed/failed/incomplete/error).
pub async fn read_turn(ws: &mut Ws) -> Result<Vec<Value>> {
    let mut events = Vec::new();
    loop {
        let msg = ws.next().await.context("socket ended")??;
        let Message::Text(text) = msg else { continue };
        let event: Value = serde_json::from_str(&text)?;
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        events.push(event);
        if matches!(kind.as_str(), "response.completed" | "response.failed" | "response.incomplete" | "error")
        {
            return Ok(events);
        }
    }
}

/// One create and its events.
pub async fn ws_turn(ws: &mut Ws, body: &Value) -> Result<Vec<Value>> {
    send_create(ws, body).await?;
    read_turn(ws).await
}

/// The last event of a turn (the Response for completed turns).
pub fn last(events: &[Value]) -> &Value {
    events.last().unwrap_or(&Value::Null)
}

pub fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

pub fn output_of(response: &Value) -> Vec<Value> {
    response["output"].as_array().cloned().unwrap_or_default()
}

/// A function_call_output answering every call in `output`.
pub fn answers(output: &[Value]) -> Vec<Value> {
    output
        .iter()
        .filter(|i| i["type"] == "function_call")
        .map(|c| json!({"type": "function_call_output", "call_id": c["call_id"], "output": "done"}))
        .collect()
}

pub fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
}

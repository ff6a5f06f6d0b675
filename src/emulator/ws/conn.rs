//! One WebSocket connection: frames in, one response at a time (later
//! creates wait in order), the latest-response cache, the age limit,
//! pings and per-connection faults.
//!
//! Generic over any `Sink + Stream` of messages, so it runs on an upgraded
//! socket or on anything else that speaks tungstenite messages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::super::cost::pause;
use super::super::error::ApiError;
use super::super::events;
use super::super::state::{Held, Shared, Transport};
use super::super::steps::Action;
use super::super::turn;

/// A data frame read from the socket.
enum Inbound {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame (not part of the protocol).
    Binary(usize),
}

/// What the connection does after a frame.
enum Flow {
    Continue,
    /// Close the connection (a close frame may already be sent).
    Stop,
    /// Go silent: no reads, no writes, no pongs.
    Deaf,
}

struct Connection<W> {
    shared: Arc<Shared>,
    sink: W,
    started: Instant,
    latest: Option<Arc<Held>>,
}

/// What a read from the socket brings.
enum Read {
    Frame(Inbound),
    /// A control frame (tungstenite answers pings itself).
    Nothing,
    /// The peer closed, or the socket failed.
    End,
}

fn read(msg: Option<Result<Message, WsError>>) -> Read {
    match msg {
        Some(Ok(Message::Text(text))) => Read::Frame(Inbound::Text(text)),
        Some(Ok(Message::Binary(bytes))) => Read::Frame(Inbound::Binary(bytes.len())),
        Some(Ok(Message::Close(_)) | Err(_)) | None => Read::End,
        Some(Ok(_)) => Read::Nothing,
    }
}

/// Runs a connection to its end. One task reads and plays: frames that
/// arrive while a response plays are read at once (so pings are answered
/// and a close is seen) and wait their turn in order.
pub(crate) async fn run<T>(shared: Arc<Shared>, socket: T)
where
    T: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send + 'static,
{
    let (sink, mut stream) = socket.split();
    let mut waiting: VecDeque<Inbound> = VecDeque::new();
    // Whether the peer may still send (no close, no failure read yet).
    let mut open = true;
    let mut shutdown = shared.shutdown.subscribe();
    let ping_every = shared.config.ping_interval;
    let max_age = shared.config.max_connection_age;
    let mut conn = Connection { shared, sink, started: Instant::now(), latest: None };
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.tick().await;
    let flow = loop {
        let inbound = match waiting.pop_front() {
            Some(inbound) => inbound,
            None if !open => break Flow::Stop,
            None => tokio::select! {
                _ = shutdown.changed() => {
                    let _ = conn.close(1001, "emulator shutting down").await;
                    break Flow::Stop;
                }
                _ = ping.tick(), if ping_every.is_some() => {
                    if conn.sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break Flow::Stop;
                    }
                    continue;
                }
                msg = stream.next() => match read(msg) {
                    Read::Frame(inbound) => inbound,
                    Read::Nothing => continue,
                    Read::End => break Flow::Stop,
                },
            },
        };
        // A running turn is cut short by shutdown; the socket is read meanwhile.
        let flow = {
            let turn = conn.handle(inbound);
            tokio::pin!(turn);
            loop {
                tokio::select! {
                    flow = &mut turn => break Some(flow),
                    _ = shutdown.changed() => break None,
                    msg = stream.next(), if open => match read(msg) {
                        Read::Frame(inbound) => waiting.push_back(inbound),
                        Read::Nothing => {}
                        Read::End => open = false,
                    },
                }
            }
        };
        match flow {
            Some(Flow::Continue) => {}
            Some(other) => break other,
            None => {
                let _ = conn.close(1001, "emulator shutting down").await;
                break Flow::Stop;
            }
        }
    };
    if let Flow::Deaf = flow {
        // Silent: nothing read (no pongs), nothing written, until the age limit.
        let deadline = conn.started + max_age;
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

impl<W> Connection<W>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    async fn send_json(&mut self, value: &Value) -> Result<(), WsError> {
        self.sink.send(Message::text(events::wire_text(value))).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), WsError> {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
        self.sink.send(Message::Close(Some(frame))).await
    }

    /// Sends an error frame and counts it.
    async fn error(&mut self, error: &ApiError) -> Flow {
        self.shared.with_stats(|s| s.errors += 1);
        match self.send_json(&error.ws_frame()).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    /// A failed continuation evicts the parent it referenced.
    fn evict_parent(&mut self, parent: Option<&str>) {
        if parent.is_some() && self.latest.as_ref().map(|l| l.id.as_str()) == parent {
            self.latest = None;
        }
    }

    async fn handle(&mut self, inbound: Inbound) -> Flow {
        let text = match inbound {
            Inbound::Text(text) => text,
            Inbound::Binary(len) => {
                self.count(len);
                return self.error(&ApiError::invalid("Binary frames are not supported.", None, None)).await;
            }
        };
        self.count(text.len());
        let mut body: Map<String, Value> = match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return self.error(&ApiError::invalid("Invalid JSON in frame.", None, None)).await;
            }
        };
        if body.remove("type").as_ref().and_then(Value::as_str) != Some("response.create") {
            let e =
                ApiError::invalid("Unsupported frame type; expected response.create.", Some("type"), None);
            return self.error(&e).await;
        }
        let max_age = self.shared.config.max_connection_age;
        if self.started.elapsed() >= max_age {
            let e = ApiError::invalid(
                format!(
                    "Responses websocket connection limit reached ({}). Create a new websocket connection to continue.",
                    age_limit(max_age)
                ),
                None,
                Some("websocket_connection_limit_reached"),
            );
            let _ = self.error(&e).await;
            let _ = self.close(1000, "connection limit reached").await;
            return Flow::Stop;
        }
        let parent = body.get("previous_response_id").and_then(Value::as_str).map(str::to_owned);
        let faults = match turn::gather_faults(&self.shared, Transport::Ws, &body) {
            Ok(f) => f,
            Err(e) => return self.error(&e).await,
        };
        if faults.no_pong {
            return Flow::Deaf;
        }
        if faults.evict {
            self.latest = None;
        }
        if faults.rate_limit {
            self.evict_parent(parent.as_deref());
            return self.error(&ApiError::rate_limited()).await;
        }
        let turn =
            match turn::prepare(&self.shared, Transport::Ws, &body, text.len(), self.latest.as_ref(), faults)
            {
                Ok(t) => t,
                Err(e) => {
                    self.evict_parent(parent.as_deref());
                    return self.error(&e).await;
                }
            };
        let (completed, flow) = self.play(&turn).await;
        if completed {
            self.latest = Some(turn.complete(&self.shared));
        } else {
            if matches!(flow, Flow::Stop) {
                self.shared.with_stats(|s| s.errors += 1);
            }
            self.evict_parent(turn.parent_id.as_deref());
        }
        flow
    }

    /// Plays the turn's steps; returns whether `response.completed` went out.
    /// The first event leaves at once (the server acknowledges the request);
    /// later events due at the same instant are queued and written together:
    /// the queue is flushed before every pause and at the end.
    async fn play(&mut self, turn: &turn::Turn) -> (bool, Flow) {
        let mut completed = false;
        for (i, step) in turn.steps(&self.shared.config.cost).into_iter().enumerate() {
            if i == 1 || !step.delay.is_zero() {
                if self.sink.flush().await.is_err() {
                    return (completed, Flow::Stop);
                }
                pause(step.delay).await;
            }
            // An event is queued, not written: events ready at the same
            // instant leave in one write, as a server's buffered writer
            // would send them.
            let sent = match step.action {
                Action::Event(n) => {
                    completed |= turn.completes(n);
                    self.sink.feed(Message::text(turn.event_text(n))).await
                }
                Action::Malformed => {
                    self.sink.feed(Message::text("{\"type\": \"response.output_text.delta\", ")).await
                }
                Action::Error(e) => {
                    self.shared.with_stats(|s| s.errors += 1);
                    let _ = self.send_json(&e.ws_frame()).await;
                    break;
                }
                Action::Failed(event) => {
                    self.shared.with_stats(|s| s.errors += 1);
                    let _ = self.send_json(&event).await;
                    break;
                }
                Action::Drop => {
                    // What was due before the drop still reaches the peer.
                    let _ = self.sink.flush().await;
                    return (completed, Flow::Stop);
                }
                Action::Close(code) => {
                    let _ = self.close(code, "emulated close").await;
                    return (completed, Flow::Stop);
                }
            };
            if sent.is_err() {
                return (completed, Flow::Stop);
            }
        }
        if self.sink.flush().await.is_err() {
            return (completed, Flow::Stop);
        }
        (completed, Flow::Continue)
    }

    fn count(&self, len: usize) {
        self.shared.with_stats(|s| {
            s.requests_ws += 1;
            s.bytes_received += len as u64;
            s.bytes_received_ws += len as u64;
        });
    }
}

/// The connection age limit as the service words it ("60 minutes"), or
/// as configured when it is not a whole number of minutes.
fn age_limit(max_age: std::time::Duration) -> String {
    match max_age.as_secs() {
        s if s >= 60 && s % 60 == 0 && max_age.subsec_nanos() == 0 => {
            let m = s / 60;
            format!("{m} minute{}", if m == 1 { "" } else { "s" })
        }
        _ => humantime::format_duration(max_age).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatorConfig;
    use serde_json::json;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// The age-limit error names the limit as configured, in the service's
    /// words when it is whole minutes.
    #[test]
    fn the_age_limit_message_names_the_configured_limit() {
        use std::time::Duration;
        assert_eq!(age_limit(Duration::from_secs(3600)), "60 minutes");
        assert_eq!(age_limit(Duration::from_secs(60)), "1 minute");
        assert_eq!(age_limit(Duration::from_millis(2500)), "2s 500ms");
        assert_eq!(age_limit(Duration::from_secs(90)), "1m 30s");
    }

    /// The connection loop over an in-memory pipe: no TCP, no HTTP.
    #[tokio::test]
    async fn runs_over_any_duplex_stream() -> Result<(), Box<dyn std::error::Error>> {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let shared = Arc::new(Shared::new(EmulatorConfig::default()));
        tokio::spawn(run(shared.clone(), server));
        let create = json!({"type": "response.create", "input": "hi",
            "metadata": {"emulator_script": "tools=0,answer=10"}});
        client.send(Message::text(create.to_string())).await?;
        let mut kinds = Vec::new();
        while kinds.last().map(String::as_str) != Some("response.completed") {
            let Some(Ok(Message::Text(text))) = client.next().await else {
                break;
            };
            let event: Value = serde_json::from_str(&text)?;
            kinds.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(kinds.len(), 9);
        assert_eq!(shared.stats().requests_ws, 1);
        assert_eq!(shared.records().len(), 1);
        Ok(())
    }
}

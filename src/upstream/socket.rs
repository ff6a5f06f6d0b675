//! The socket task: one task owns one upstream WebSocket, runs one response
//! at a time, keeps the connection alive while idle, and drains a response
//! whose consumer went away.
//!
//! The task is generic over a `Sink<Message> + Stream` pair so tests drive it
//! with channels. Its state visible to the pool (leased, pending turns, dead,
//! latest response id) lives in [`super::shared`].

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::debug;

use super::shared::{Command, Frame, FrameTx, Relay, Shared, SocketHandle};
use super::{SocketId, UpstreamError, WsSettings, tenant_short};
use crate::translate::{leading, leading_type, unescaped_string};
use crate::until;

/// What [`SocketTask::forward`] tells the turn loop.
enum Step {
    Continue,
    Return(Result<(), UpstreamError>),
}

/// Timers of one socket task, from [`WsSettings`].
#[derive(Debug, Clone, Copy)]
struct Timers {
    ping_interval: Duration,
    pong_timeout: Duration,
    idle_timeout: Duration,
    max_age: Duration,
    drain_timeout: Duration,
}

/// Starts the task for an open WebSocket `ws`. It ends when the socket dies,
/// idles out, ages out while idle, every handle is dropped, or `shutdown`
/// turns true (after the turn in progress).
pub fn spawn_socket<S, E>(
    ws: S,
    id: SocketId,
    tenant: u128,
    settings: &WsSettings,
    notify: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> (SocketHandle, JoinHandle<()>)
where
    S: Sink<Message, Error = E> + Stream<Item = Result<Message, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
{
    let shared = Arc::new(Shared::new(id, tenant, notify));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let timers = Timers {
        ping_interval: settings.ping_interval,
        pong_timeout: settings.pong_timeout,
        idle_timeout: settings.idle_timeout,
        max_age: settings.max_age,
        drain_timeout: settings.drain_timeout,
    };
    let task = SocketTask {
        ws,
        shared: shared.clone(),
        cmd: cmd_rx,
        shutdown,
        timers,
        ping_sent: None,
        last_rx: Instant::now(),
        relay: Relay::All,
        first_frame: None,
    };
    let join = tokio::spawn(task.run());
    (SocketHandle { shared, cmd: cmd_tx }, join)
}

struct SocketTask<S> {
    ws: S,
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedReceiver<Command>,
    shutdown: watch::Receiver<bool>,
    timers: Timers,
    /// When our outstanding ping went out, if any.
    ping_sent: Option<Instant>,
    /// Last traffic from the server.
    last_rx: Instant,
    /// Which frames the turn in progress wants.
    relay: Relay,
    /// When the turn in progress got its first text frame.
    first_frame: Option<std::time::Instant>,
}

/// How the idle loop ended.
enum Exit {
    /// Close politely with 1000.
    Close(&'static str),
    /// The socket is already unusable.
    Dead(UpstreamError),
}

/// What a turn needs from each frame: its type, the response id, an error code.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    response: Option<PeekResponse<'a>>,
    #[serde(default, borrow)]
    error: Option<PeekError<'a>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekResponse<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekError<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

/// The verdict on one text frame of a turn.
enum Kind {
    /// Not the end: its leading type says so without a parse.
    Passing,
    /// Not the end, as far as a parse can tell (or it does not parse).
    Ongoing,
    /// The turn ended; `Some(id)` only for `response.completed`.
    End(Option<String>),
    /// `websocket_connection_limit_reached`: the socket is spent.
    Spent,
}

fn classify(text: &str) -> Kind {
    // Most frames are deltas: when the type leads the frame (as servers
    // write it), only the frames that can end a turn need reading, and of
    // those only an `error` (for its code) or a `response.completed` whose
    // id is not where servers put it needs a parse. A terminal frame holds
    // the whole Response; the translator parses it anyway, and a malformed
    // one retires the socket there.
    match leading_type(text) {
        Some(kind) if !crate::translate::ends_response(kind) => return Kind::Passing,
        Some("response.failed" | "response.incomplete") => return Kind::End(None),
        Some("response.completed") => {
            if let Some(id) = leading_response_id(text) {
                return Kind::End(Some(id.to_owned()));
            }
        }
        _ => {}
    }
    parsed(text)
}

/// The verdict from a parse of the frame.
fn parsed(text: &str) -> Kind {
    let Ok(p) = serde_json::from_str::<Peek<'_>>(text) else {
        return Kind::Ongoing;
    };
    match p.kind.as_ref() {
        "response.completed" => Kind::End(p.response.and_then(|r| r.id).map(Cow::into_owned)),
        "response.failed" | "response.incomplete" => Kind::End(None),
        "error" => {
            let code = p.error.and_then(|e| e.code).or(p.code);
            if code.as_deref() == Some("websocket_connection_limit_reached") {
                Kind::Spent
            } else {
                Kind::End(None)
            }
        }
        _ => Kind::Ongoing,
    }
}

/// The id of a `response.completed` frame in the servers' compact layout:
/// `{"type":"response.completed",` then `"sequence_number":N,` or not, then
/// `"response":{"id":"…"` without escapes; `None` means "parse to know".
fn leading_response_id(text: &str) -> Option<&str> {
    let head = leading(text).filter(|h| h.kind == "response.completed")?;
    unescaped_string(head.response.strip_prefix(r#"{"id":""#)?)
}

fn close_code(frame: Option<&CloseFrame>) -> Option<u16> {
    frame.map(|f| u16::from(f.code))
}

/// Tells the turn's consumer, if still there, why the socket died.
async fn fail(consumer: Option<&FrameTx>, why: UpstreamError) -> Result<(), UpstreamError> {
    if let Some(tx) = consumer {
        let _ = tx.send(Err(why.clone())).await;
    }
    Err(why)
}

impl<S, E> SocketTask<S>
where
    S: Sink<Message, Error = E> + Stream<Item = Result<Message, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
{
    async fn run(mut self) {
        let id = self.shared.id;
        let tenant = tenant_short(self.shared.tenant);
        debug!(socket = id, %tenant, "upstream socket open");
        let exit = loop {
            match self.idle().await {
                Ok(Command::Turn { frame, frames, relay }) => {
                    self.relay = relay;
                    if let Err(why) = self.turn(frame, frames).await {
                        break Exit::Dead(why);
                    }
                    if *self.shutdown.borrow() {
                        break Exit::Close("shutdown");
                    }
                }
                Err(exit) => break exit,
            }
        };
        let age_s = self.shared.age().as_secs();
        match exit {
            Exit::Close(reason) => {
                self.shared.die(UpstreamError::Closed { code: Some(1000), after_output: false });
                let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                let _ = self.ws.send(Message::Close(Some(frame))).await;
                let _ = self.ws.close().await;
                debug!(socket = id, %tenant, age_s, reason, "upstream socket closed");
            }
            Exit::Dead(why) => {
                debug!(socket = id, %tenant, age_s, error = %why, "upstream socket dead");
                self.shared.die(why);
                let _ = self.ws.close().await;
            }
        }
        // Turns queued behind the fatal one learn why through their channel.
        self.cmd.close();
        let why = self.shared.lock().dead.clone();
        while let Ok(Command::Turn { frames, .. }) = self.cmd.try_recv() {
            if let Some(why) = why.clone() {
                let _ = frames.try_send(Err(why));
            }
        }
    }

    /// Between turns: keepalive, idle and age limits, until a command.
    async fn idle(&mut self) -> Result<Command, Exit> {
        let idle_since = Instant::now();
        // Idle and age limits wait while a lease holder is about to send.
        let mut deferred = false;
        loop {
            let t = self.timers;
            let (ping_at, pong_by) = self.keepalive();
            let idle_by = (!t.idle_timeout.is_zero() && !deferred).then(|| idle_since + t.idle_timeout);
            let age_by = (!t.max_age.is_zero() && !deferred).then(|| self.shared.opened_at + t.max_age);
            tokio::select! {
                biased;
                cmd = self.cmd.recv() => return cmd.ok_or(Exit::Close("pool dropped")),
                msg = self.ws.next() => self.on_idle_message(msg).await?,
                _ = self.shutdown.changed() => return Err(Exit::Close("shutdown")),
                _ = until(pong_by) => {
                    return Err(Exit::Dead(UpstreamError::PingTimeout { after_output: false }));
                }
                _ = until(ping_at) => self.ping(false).await.map_err(Exit::Dead)?,
                _ = until(idle_by) => {
                    if !self.shared.lock().leased {
                        return Err(Exit::Close("idle timeout"));
                    }
                    deferred = true;
                }
                _ = until(age_by) => {
                    if !self.shared.lock().leased {
                        return Err(Exit::Close("max age"));
                    }
                    deferred = true;
                }
            }
        }
    }

    /// When to send the next ping, and when the outstanding one expires.
    fn keepalive(&self) -> (Option<Instant>, Option<Instant>) {
        let t = self.timers;
        let ping_at = match self.ping_sent {
            None if !t.ping_interval.is_zero() => Some(self.last_rx + t.ping_interval),
            _ => None,
        };
        (ping_at, self.ping_sent.map(|at| at + t.pong_timeout))
    }

    async fn ping(&mut self, delivered: bool) -> Result<(), UpstreamError> {
        if let Err(e) = self.ws.send(Message::Ping(Vec::new().into())).await {
            debug!(socket = self.shared.id, error = %e, "upstream ping failed");
            return Err(UpstreamError::Closed { code: None, after_output: delivered });
        }
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    async fn on_idle_message(&mut self, msg: Option<Result<Message, E>>) -> Result<(), Exit> {
        match self.on_message(msg, false).await {
            Ok(Some(text)) => {
                debug!(socket = self.shared.id, len = text.len(), "unexpected frame while idle");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(why) => Err(Exit::Dead(why)),
        }
    }

    /// Control traffic handled in place; a text frame returned; the end of
    /// the socket as an error.
    async fn on_message(
        &mut self,
        msg: Option<Result<Message, E>>,
        delivered: bool,
    ) -> Result<Option<Frame>, UpstreamError> {
        let closed = |code| UpstreamError::Closed { code, after_output: delivered };
        let msg = match msg {
            None => return Err(closed(None)),
            Some(Err(e)) => {
                debug!(socket = self.shared.id, error = %e, "upstream read failed");
                return Err(closed(None));
            }
            Some(Ok(m)) => m,
        };
        self.last_rx = Instant::now();
        self.ping_sent = None;
        match msg {
            Message::Text(t) => Ok(Some(t)),
            Message::Ping(p) => {
                self.ws.send(Message::Pong(p)).await.map_err(|_| closed(None))?;
                Ok(None)
            }
            Message::Pong(_) | Message::Frame(_) => Ok(None),
            Message::Binary(_) => Err(UpstreamError::Protocol("binary frame".into())),
            Message::Close(f) => Err(closed(close_code(f.as_ref()))),
        }
    }

    /// One response: send the create, forward frames until the terminal one.
    /// `Err` means the socket is dead (the consumer was told).
    async fn turn(&mut self, frame: String, frames: FrameTx) -> Result<(), UpstreamError> {
        let started = Instant::now();
        if let Err(e) = self.ws.send(Message::text(frame)).await {
            debug!(socket = self.shared.id, error = %e, "upstream write failed");
            let why = UpstreamError::Closed { code: None, after_output: false };
            let _ = frames.send(Err(why.clone())).await;
            return Err(why);
        }
        self.first_frame = None;
        let mut consumer = Some(frames);
        let mut delivered = false;
        let mut drain_by: Option<Instant> = None;
        loop {
            // Frames usually arrive several per read: take what is already
            // buffered without arming timers (keepalive, drain deadline) for
            // each one. A dropped `next()` loses nothing.
            if drain_by.is_none()
                && let Some(msg) = self.ws.next().now_or_never()
            {
                match self.forward(msg, started, &mut consumer, &mut delivered, &mut drain_by).await {
                    Step::Continue => continue,
                    Step::Return(r) => return r,
                }
            }
            let gone = async {
                match &consumer {
                    Some(tx) => tx.closed().await,
                    None => std::future::pending().await,
                }
            };
            let (ping_at, pong_by) = self.keepalive();
            let msg = tokio::select! {
                msg = self.ws.next() => msg,
                _ = until(pong_by) => {
                    let why = UpstreamError::PingTimeout { after_output: delivered };
                    return fail(consumer.as_ref(), why).await;
                }
                _ = until(ping_at) => {
                    if let Err(why) = self.ping(delivered).await {
                        return fail(consumer.as_ref(), why).await;
                    }
                    continue;
                }
                _ = gone => {
                    consumer = None;
                    drain_by = Some(Instant::now() + self.timers.drain_timeout);
                    debug!(socket = self.shared.id, "consumer gone; draining");
                    continue;
                }
                _ = until(drain_by) => {
                    return Err(UpstreamError::Protocol("drain deadline passed".into()));
                }
            };
            match self.forward(msg, started, &mut consumer, &mut delivered, &mut drain_by).await {
                Step::Continue => {}
                Step::Return(r) => return r,
            }
        }
    }

    /// Handles one message of a response: passes its text frame to the
    /// consumer (if still there) and ends the turn on the terminal frame.
    async fn forward(
        &mut self,
        msg: Option<Result<Message, E>>,
        started: Instant,
        consumer: &mut Option<FrameTx>,
        delivered: &mut bool,
        drain_by: &mut Option<Instant>,
    ) -> Step {
        let text = match self.on_message(msg, *delivered).await {
            Ok(Some(text)) => text,
            Ok(None) => return Step::Continue,
            Err(why) => return Step::Return(fail(consumer.as_ref(), why).await),
        };
        self.first_frame.get_or_insert_with(std::time::Instant::now);
        let kind = classify(&text);
        if let Kind::Spent = kind {
            let why = UpstreamError::ConnectionLimit { after_output: *delivered };
            return Step::Return(fail(consumer.as_ref(), why).await);
        }
        if let Kind::End(latest) = kind {
            debug!(
                socket = self.shared.id,
                ms = started.elapsed().as_millis() as u64,
                drained = consumer.is_none(),
                "turn ended"
            );
            // Settle first (idle, latest recorded): the consumer may lease the
            // socket again the moment it reads the terminal frame. A drained
            // response reached no client, so no session can continue from it:
            // the socket is as good as cold, and the pool reuses it first.
            self.shared.end_turn(if consumer.is_some() { latest } else { None }, self.first_frame);
            if let Some(tx) = consumer.take() {
                let _ = tx.send(Ok(text)).await;
            }
            return Step::Return(Ok(()));
        }
        if matches!(kind, Kind::Passing) && self.relay == Relay::Needed {
            return Step::Continue;
        }
        if let Some(tx) = &*consumer {
            if tx.send(Ok(text)).await.is_ok() {
                if !*delivered {
                    *delivered = true;
                    // The consumer's first frame is its client's first
                    // event: let it go out before this task reads the rest
                    // of the burst (which it would otherwise pass on whole,
                    // up to the channel's 256 frames, first).
                    tokio::task::yield_now().await;
                }
            } else {
                *consumer = None;
                *drain_by = Some(Instant::now() + self.timers.drain_timeout);
            }
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELTA: &str = r#"{"type":"response.output_text.delta","sequence_number":1,"delta":"hi"}"#;
    const COMPLETED: &str = r#"{"type":"response.completed","response":{"id":"resp_1","output":[]}}"#;

    /// Frames whose type leads (the servers' compact form) skip the full parse;
    /// any other layout is parsed, with the same verdicts.
    #[test]
    fn classify_sniffs_the_leading_type_and_parses_the_rest() {
        assert!(matches!(classify(DELTA), Kind::Passing));
        assert!(matches!(classify(COMPLETED), Kind::End(Some(id)) if id == "resp_1"));
        let spaced = r#"{ "type": "response.completed", "response": {"id": "resp_2"}}"#;
        assert!(matches!(classify(spaced), Kind::End(Some(id)) if id == "resp_2"));
        let late = r#"{"sequence_number":3,"type":"response.failed","response":{"id":"resp_3"}}"#;
        assert!(matches!(classify(late), Kind::End(None)));
        let limit = r#"{"type":"error","error":{"code":"websocket_connection_limit_reached"}}"#;
        assert!(matches!(classify(limit), Kind::Spent));
        let escaped = r#"{"type":"response.complete\u0064","response":{"id":"resp_4"}}"#;
        assert!(matches!(classify(escaped), Kind::End(Some(id)) if id == "resp_4"));
        assert!(matches!(classify(r#"{"type":"response.completed""#), Kind::Ongoing));
        assert_eq!(leading_type(DELTA), Some("response.output_text.delta"));
        assert_eq!(leading_type(r#"{"type":"a\"b"}"#), None);
    }

    fn end_id(kind: Kind) -> Option<Option<String>> {
        match kind {
            Kind::End(id) => Some(id),
            _ => None,
        }
    }

    /// A `response.completed` in the servers' layout ends the turn without a
    /// parse, with the id a parse finds; any other layout is parsed.
    #[test]
    fn a_completed_frame_in_the_servers_layout_gives_its_id_without_a_parse() {
        let fast = [
            COMPLETED,
            r#"{"type":"response.completed","sequence_number":12,"response":{"id":"resp_2","object":"response"}}"#,
            r#"{"type":"response.completed","response":{"id":"resp_3"},"sequence_number":4}"#,
        ];
        for text in fast {
            let id = leading_response_id(text).expect(text);
            assert_eq!(end_id(parsed(text)), Some(Some(id.to_owned())), "{text}");
            assert_eq!(end_id(classify(text)), Some(Some(id.to_owned())), "{text}");
        }
        // Not the layout: left to the parse, which still finds the id.
        let slow = [
            (r#"{"type":"response.completed","response":{"object":"response","id":"resp_4"}}"#, "resp_4"),
            (r#"{"type":"response.completed","response":{"id":"resp_\u0035"}}"#, "resp_5"),
            (r#"{"type":"response.completed","sequence_number":,"response":{"id":"x"}}"#, ""),
            (r#"{"type":"response.completed","sequence_number":-1,"response":{"id":"resp_6"}}"#, "resp_6"),
            (r#"{"type":"response.completed", "response":{"id":"resp_7"}}"#, "resp_7"),
        ];
        for (text, id) in slow {
            assert_eq!(leading_response_id(text), None, "{text}");
            let want = (!id.is_empty()).then(|| Some(id.to_owned()));
            assert_eq!(end_id(classify(text)), want, "{text}");
        }
        // Failed and incomplete responses end the turn with no id, unparsed.
        let failed = r#"{"type":"response.failed","response":{"id":"resp_8","error":{}}}"#;
        let incomplete = r#"{"type":"response.incomplete","response":{"id":"resp_9"}}"#;
        for text in [failed, incomplete] {
            assert_eq!(end_id(parsed(text)), Some(None));
            assert_eq!(end_id(classify(text)), Some(None));
            // A cut-off frame too: the translator judges (and retires) it.
            assert_eq!(end_id(classify(&text[..30])), Some(None));
        }
    }
}

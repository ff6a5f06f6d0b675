//! Socket task tests, driven through channels standing in for the WebSocket,
//! with paused time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::*;

/// The task's side of a fake WebSocket.
struct ChanWs {
    from_server: mpsc::UnboundedReceiver<Result<Message, String>>,
    to_server: mpsc::UnboundedSender<Message>,
}

impl Stream for ChanWs {
    type Item = Result<Message, String>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.from_server.poll_recv(cx)
    }
}

impl Sink<Message> for ChanWs {
    type Error = String;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), String> {
        self.to_server.send(item).map_err(|e| e.to_string())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// The test's side: the "server".
struct Server {
    tx: mpsc::UnboundedSender<Result<Message, String>>,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Server {
    fn say(&self, text: &str) {
        let _ = self.tx.send(Ok(Message::text(text)));
    }
    async fn heard(&mut self) -> Message {
        self.rx.recv().await.expect("task alive")
    }
}

struct Rig {
    server: Server,
    handle: SocketHandle,
    shutdown: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

fn settings() -> WsSettings {
    let mut s = WsSettings::new("ws://unused");
    s.idle_timeout = Duration::from_secs(600);
    s.drain_timeout = Duration::from_secs(30);
    s
}

fn rig(s: &WsSettings) -> Rig {
    let (tx, from_server) = mpsc::unbounded_channel();
    let (to_server, rx) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ws = ChanWs { from_server, to_server };
    let (handle, join) = spawn_socket(ws, 7, 42, s, Arc::new(Notify::new()), shutdown_rx);
    Rig { server: Server { tx, rx }, handle, shutdown, join }
}

fn created(id: &str) -> String {
    format!(
        r#"{{"type":"response.created","sequence_number":0,"response":{{"id":"{id}","status":"in_progress"}}}}"#
    )
}
fn delta() -> &'static str {
    r#"{"type":"response.output_text.delta","sequence_number":1,"delta":"hi"}"#
}
fn completed(id: &str) -> String {
    format!(
        r#"{{"type":"response.completed","sequence_number":2,"response":{{"id":"{id}","status":"completed","output":[]}}}}"#
    )
}

/// Waits (in paused time) until the socket can be leased again.
async fn wait_idle(h: &SocketHandle) -> Lease {
    for _ in 0..1000 {
        if let Ok(l) = Lease::take(h) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("socket never became idle: {:?}", h.shared.lock());
}

async fn wait_dead(h: &SocketHandle) -> UpstreamError {
    for _ in 0..1000 {
        if let Some(why) = h.shared.lock().dead.clone() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("socket never died");
}

/// The consumer may lease the socket again the moment it reads the terminal
/// frame: by then the task has recorded the new latest response and ended
/// the turn, with no wait for the stream's end.
#[tokio::test(start_paused = true)]
async fn settled_when_the_terminal_frame_is_read() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send(r#"{"type":"response.create"}"#.into()).await.expect("send");
    r.server.heard().await;
    r.server.say(&created("resp_9"));
    r.server.say(&completed("resp_9"));
    assert_eq!(frames.next().await, Some(Ok(created("resp_9").into())));
    assert_eq!(frames.next().await, Some(Ok(completed("resp_9").into())));
    // No further poll of `frames`, no sleep: the state is already final.
    assert_eq!(lease.current_latest_response_id().as_deref(), Some("resp_9"));
    assert_eq!(r.handle.shared.lock().pending, 0);
    drop(frames);
    drop(lease);
    let again = Lease::take(&r.handle).expect("idle at once, no wait");
    assert_eq!(again.latest_response_id(), Some("resp_9"));
}

/// `Relay::Needed` (a non-streaming turn): only the terminal frame reaches
/// the consumer, and a frame that does not show its type (here, a broken
/// one), so the consumer can still judge it; frames whose leading type shows
/// they are not the end (`response.created` included) stay in the task,
/// which notes when the first of them came.
#[tokio::test(start_paused = true)]
async fn relay_needed_passes_the_unreadable_and_the_last_frame_and_notes_the_first() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let before = std::time::Instant::now();
    let mut frames =
        lease.send_relaying(r#"{"type":"response.create"}"#.into(), Relay::Needed).await.expect("send");
    r.server.heard().await;
    let broken = r#"{"type": "response.output_text.delta", "#;
    for f in [created("resp_3").as_str(), delta(), delta(), broken, delta(), &completed("resp_3")] {
        r.server.say(f);
    }
    let mut got = Vec::new();
    while let Some(f) = frames.next().await {
        got.push(f.expect("frame").to_string());
    }
    let after = std::time::Instant::now();
    assert_eq!(got, [broken.to_string(), completed("resp_3")]);
    assert_eq!(lease.current_latest_response_id().as_deref(), Some("resp_3"));
    let first = lease.first_frame_at().expect("the first frame's arrival is noted");
    assert!(before <= first && first <= after);
    // The next turn on the socket relays everything again, and notes its own first frame.
    let mut frames = lease.send(r#"{"type":"response.create"}"#.into()).await.expect("send");
    r.server.heard().await;
    for f in [created("resp_4").as_str(), delta(), &completed("resp_4")] {
        r.server.say(f);
        assert_eq!(frames.next().await, Some(Ok(f.into())));
    }
    assert!(lease.first_frame_at().is_some_and(|t| t >= first));
}

#[tokio::test(start_paused = true)]
async fn one_turn_then_idle_with_latest_id() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    assert_eq!(lease.latest_response_id(), None);
    assert!(matches!(Lease::take(&r.handle), Err(UpstreamError::Busy)));
    let mut frames = lease.send(r#"{"type":"response.create"}"#.into()).await.expect("send");
    match r.server.heard().await {
        Message::Text(t) => assert_eq!(t.as_str(), r#"{"type":"response.create"}"#),
        other => panic!("unexpected {other:?}"),
    }
    for f in [created("resp_1").as_str(), delta(), &completed("resp_1")] {
        r.server.say(f);
        assert_eq!(frames.next().await, Some(Ok(f.into())));
    }
    assert_eq!(frames.next().await, None);
    assert_eq!(lease.current_latest_response_id().as_deref(), Some("resp_1"));
    drop(lease);
    let lease = wait_idle(&r.handle).await;
    assert_eq!(lease.latest_response_id(), Some("resp_1"));
}

#[tokio::test(start_paused = true)]
async fn consumer_drop_drains_to_terminal_frame() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    r.server.say(&created("resp_d"));
    assert!(frames.next().await.is_some());
    drop(frames);
    drop(lease);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(Lease::take(&r.handle), Err(UpstreamError::Busy)));
    r.server.say(delta());
    r.server.say(&completed("resp_d"));
    let lease = wait_idle(&r.handle).await;
    // The drained response reached no client: nothing can continue from it,
    // so the socket counts as cold (the pool reuses it first).
    assert_eq!(lease.latest_response_id(), None);
}

#[tokio::test(start_paused = true)]
async fn retired_socket_is_never_leased_again_and_closes_after_its_drain() {
    let Rig { mut server, handle, shutdown: _shutdown, join } = rig(&settings());
    let mut lease = Lease::take(&handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    server.heard().await;
    server.say(&created("resp_r"));
    assert!(frames.next().await.is_some());
    drop(frames);
    lease.retire();
    assert!(matches!(Lease::take(&handle), Err(UpstreamError::Gone)));
    drop(handle);
    // The response in flight drains first, then the socket closes normally.
    server.say(&completed("resp_r"));
    match server.heard().await {
        Message::Close(Some(CloseFrame { code, .. })) => assert_eq!(u16::from(code), 1000),
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(1), join).await.expect("task ended").expect("no panic");
}

#[tokio::test(start_paused = true)]
async fn drain_past_deadline_kills_socket() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    drop(frames);
    drop(lease);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(matches!(wait_dead(&r.handle).await, UpstreamError::Protocol(_)));
    assert!(matches!(Lease::take(&r.handle), Err(UpstreamError::Gone)));
}

#[tokio::test(start_paused = true)]
async fn idle_pings_and_pong_keeps_alive() {
    let mut r = rig(&settings());
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(matches!(r.server.heard().await, Message::Ping(_)));
    let _ = r.server.tx.send(Ok(Message::Pong(Vec::new().into())));
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(matches!(r.server.heard().await, Message::Ping(_)));
    assert!(r.handle.shared.lock().dead.is_none());
}

#[tokio::test(start_paused = true)]
async fn no_pong_means_dead() {
    let mut r = rig(&settings());
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(matches!(r.server.heard().await, Message::Ping(_)));
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(wait_dead(&r.handle).await, UpstreamError::PingTimeout { after_output: false });
    let mut lease = Lease::new(r.handle.clone(), false);
    assert!(lease.send("{}".into()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn server_ping_is_answered() {
    let mut r = rig(&settings());
    let _ = r.server.tx.send(Ok(Message::Ping(b"x".to_vec().into())));
    match r.server.heard().await {
        Message::Pong(p) => assert_eq!(&p[..], b"x"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn close_codes_mid_turn_and_idle() {
    for code in [1001u16, 1011, 1012, 1013] {
        let mut r = rig(&settings());
        let mut lease = Lease::take(&r.handle).expect("idle");
        let mut frames = lease.send("{}".into()).await.expect("send");
        r.server.heard().await;
        r.server.say(&created("resp_c"));
        assert!(matches!(frames.next().await, Some(Ok(_))));
        let close = CloseFrame { code: code.into(), reason: "bye".into() };
        let _ = r.server.tx.send(Ok(Message::Close(Some(close))));
        let want = UpstreamError::Closed { code: Some(code), after_output: true };
        assert_eq!(frames.next().await, Some(Err(want.clone())));
        assert_eq!(frames.next().await, None);
        assert!(!want.retryable_before_output());
        assert_eq!(wait_dead(&r.handle).await, want);
    }
    let r = rig(&settings());
    let close = CloseFrame { code: 1001.into(), reason: "".into() };
    let _ = r.server.tx.send(Ok(Message::Close(Some(close))));
    assert!(matches!(wait_dead(&r.handle).await, UpstreamError::Closed { code: Some(1001), .. }));
}

#[tokio::test(start_paused = true)]
async fn abrupt_end_before_output_is_retryable() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    let _ = r.server.tx.send(Err("reset".into()));
    let got = frames.next().await;
    let Some(Err(e)) = got else { panic!("unexpected {got:?}") };
    assert_eq!(e, UpstreamError::Closed { code: None, after_output: false });
    assert!(e.retryable_before_output());
}

#[tokio::test(start_paused = true)]
async fn connection_limit_error_frame_kills_socket() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    r.server.say(r#"{"type":"error","status":400,"error":{"type":"invalid_request_error","code":"websocket_connection_limit_reached","message":"60 minutes"}}"#);
    let want = UpstreamError::ConnectionLimit { after_output: false };
    assert_eq!(frames.next().await, Some(Err(want.clone())));
    assert!(want.retryable_before_output());
    assert_eq!(wait_dead(&r.handle).await, want);
}

#[tokio::test(start_paused = true)]
async fn request_error_frame_ends_turn_and_clears_latest() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    r.server.say(&completed("resp_1"));
    assert!(frames.next().await.is_some());
    assert_eq!(frames.next().await, None);
    let e = r#"{"type":"error","code":"previous_response_not_found","message":"no","param":"previous_response_id"}"#;
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    r.server.say(e);
    assert_eq!(frames.next().await, Some(Ok(e.into())));
    assert_eq!(frames.next().await, None);
    drop(lease);
    let lease = wait_idle(&r.handle).await;
    assert_eq!(lease.latest_response_id(), None);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_and_shutdown_close_normally() {
    let mut s = settings();
    s.idle_timeout = Duration::from_secs(5);
    let mut r = rig(&s);
    tokio::time::sleep(Duration::from_secs(6)).await;
    match r.server.heard().await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("unexpected {other:?}"),
    }
    let _ = (&mut r.join).await;

    let mut r = rig(&settings());
    let _ = r.shutdown.send(true);
    match r.server.heard().await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("unexpected {other:?}"),
    }
    let _ = r.join.await;
    assert!(matches!(Lease::take(&r.handle), Err(UpstreamError::Gone)));
}

#[tokio::test(start_paused = true)]
async fn max_age_closes_idle_socket() {
    let mut s = settings();
    s.max_age = Duration::from_secs(100);
    s.idle_timeout = Duration::ZERO;
    s.ping_interval = Duration::ZERO;
    let mut r = rig(&s);
    tokio::time::sleep(Duration::from_secs(101)).await;
    assert!(matches!(r.server.heard().await, Message::Close(Some(_))));
}

#[tokio::test(start_paused = true)]
async fn stalled_turn_pings_then_times_out_after_output() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send("{}".into()).await.expect("send");
    r.server.heard().await;
    r.server.say(&created("resp_s"));
    assert!(matches!(frames.next().await, Some(Ok(_))));
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert!(matches!(r.server.heard().await, Message::Ping(_)));
    let got = frames.next().await;
    assert_eq!(got, Some(Err(UpstreamError::PingTimeout { after_output: true })));
    assert!(!UpstreamError::PingTimeout { after_output: true }.retryable_before_output());
    assert_eq!(frames.next().await, None);
}

/// A streaming consumer gets the turn's first frame before the task reads
/// on through a burst that has already arrived: the first event goes out to
/// the client first, and the rest follows, gathered.
#[tokio::test(start_paused = true)]
async fn the_first_frame_reaches_the_consumer_before_the_burst_is_read() {
    let mut r = rig(&settings());
    let mut lease = Lease::take(&r.handle).expect("idle");
    let mut frames = lease.send(r#"{"type":"response.create"}"#.into()).await.expect("send");
    r.server.heard().await;
    r.server.say(&created("resp_5"));
    for _ in 0..10 {
        r.server.say(delta());
    }
    r.server.say(&completed("resp_5"));
    assert_eq!(frames.next().await, Some(Ok(created("resp_5").into())));
    assert!(frames.ready().is_none(), "the task read on before the consumer had its first frame");
    let mut rest = 0;
    while let Some(f) = frames.next().await {
        f.expect("frame");
        rest += 1;
    }
    assert_eq!(rest, 11);
}

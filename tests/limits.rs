//! Every limit in config.toml at its edge, with what a client sees on each
//! side of it: connections, request heads, body deadlines, slow-drip and idle
//! clients, sessions, sockets per tenant and in total, and the queue deadline.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Conversation;
use tether::emulator::EmulatorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response (its head, then `content-length` bytes of body).
/// `None` when the connection closed before a whole head arrived.
async fn read_response(s: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(RawResponse { status, head, body })
}

/// Sends `request` on a new connection and reads one response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<RawResponse> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut s)).await.expect("an answer in time")
}

fn healthz(keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!("GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: {connection}\r\n\r\n").into_bytes()
}

/// Waits until the connection is closed by the other side (EOF or reset).
async fn closed_by_peer(s: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            return;
        }
    }
}

/// Sends a request head a byte every 20 ms (249 bytes: 5 s in all), then
/// waits until the peer closes the connection.
async fn drip_head(s: &mut TcpStream) {
    for b in b"POST /v1/responses HTTP/1.1\r\nhost: t\r\nx-slow: ".iter().chain([b'a'; 200].iter()) {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closed_by_peer(s).await;
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

/// A first-turn body; `fault` rides in `metadata.emulator_fault`.
fn first_turn(text: &str, stream: bool, fault: Option<&str>) -> String {
    let mut metadata = serde_json::json!({"emulator_script": "tools=3"});
    if let Some(f) = fault {
        metadata["emulator_fault"] = f.into();
    }
    serde_json::json!({"model": "gpt-emulated", "store": false, "stream": stream, "metadata": metadata,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]})
    .to_string()
}

/// POSTs `body` to /v1/responses with `key`; returns status, body, time taken and route.
async fn post(addr: SocketAddr, key: &str, body: String) -> (u16, Vec<u8>, Duration, Option<String>) {
    use http_body_util::{BodyExt, Full};
    let started = Instant::now();
    let req = http::Request::post(format!("http://{addr}/v1/responses"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let route = resp.headers().get("x-tether-route").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, bytes, started.elapsed(), route)
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_then_room_frees_up() {
    let (_emu, t) =
        common::emulator_and_tether(EmulatorConfig::default(), |c| c.server.max_connections = 4).await;
    // Exactly the limit is served, and stays open (keep-alive).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(&healthz(true)).await.unwrap();
        assert_eq!(read_response(&mut s).await.unwrap().status, 200);
        held.push(s);
    }
    // One more is answered 503 in the API's shape, with Retry-After, and closed.
    let refused = exchange(t.addr, &healthz(false)).await.expect("a 503, not a reset");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(error_code(&refused.body), "too_many_connections");
    assert!(refused.head.contains("retry-after: 1"), "{}", refused.head);
    // Each held connection still works.
    for s in &mut held {
        s.write_all(&healthz(true)).await.unwrap();
        assert_eq!(read_response(s).await.unwrap().status, 200);
    }
    // Closing one makes room for exactly one more.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = exchange(t.addr, &healthz(false)).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a connection closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    assert!(
        common::wait_metric(t.addr, "tether_client_connections_refused_total", Duration::from_secs(5), |v| v
            >= 1.0)
        .await
        .is_finite()
    );
    common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(5), |v| v <= 1.0).await;
}

#[tokio::test]
async fn request_heads_beyond_max_header_bytes_get_431() {
    let (_emu, t) =
        common::emulator_and_tether(EmulatorConfig::default(), |c| c.server.max_header_bytes = 8192).await;
    let with_pad = |n: usize| {
        format!("GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\nconnection: close\r\n\r\n", "a".repeat(n))
            .into_bytes()
    };
    // Under the limit (a 6 KB header): served.
    assert_eq!(exchange(t.addr, &with_pad(6_000)).await.unwrap().status, 200);
    // Over it (10 KB, then 1 MB): 431, and the connection is closed.
    for n in [10_000, 1_000_000] {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        // The 1 MB head may be cut off by the close; the answer still comes.
        let _ = s.write_all(&with_pad(n)).await;
        let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s)).await.unwrap();
        assert_eq!(r.map(|r| r.status), Some(431), "{n}-byte header");
    }
    // Still serving.
    assert_eq!(exchange(t.addr, &healthz(false)).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_body_read_timeout_gets_408() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.body_read_timeout = Duration::from_millis(1000);
    })
    .await;
    let body = first_turn("drip", false, None);
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         authorization: Bearer sk-drip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // Dripped in 10 pieces over ~200 ms: inside the deadline, served.
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in body.as_bytes().chunks(body.len().div_ceil(10)) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_response(&mut s).await.unwrap().status, 200);
    let upstream_before = emu.stats().requests_ws + emu.stats().requests_http;
    // Half a body, then nothing: 408 in the API's shape, nothing sent upstream.
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s)).await.unwrap().unwrap();
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(error_code(&r.body), "request_timeout");
    assert_eq!(emu.stats().requests_ws + emu.stats().requests_http, upstream_before);
    common::wait_metric(t.addr, "tether_requests_in_flight", Duration::from_secs(5), |v| v == 1.0).await;
}

#[tokio::test]
async fn slow_drip_headers_are_cut_off_at_header_read_timeout() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    // 249 bytes at 20 ms each would take 5 s: tether closes long before.
    tokio::time::timeout(Duration::from_secs(4), drip_head(&mut s))
        .await
        .expect("closed at the header deadline");
    assert_eq!(exchange(t.addr, &healthz(false)).await.unwrap().status, 200);
}

/// An idle keep-alive connection outlives `header_read_timeout` (a client's
/// pool may hold it far longer: reqwest 90 s) and is closed only at
/// `keepalive_timeout`; once it sits past that, tether closes it.
#[tokio::test]
async fn idle_keep_alive_lasts_until_keepalive_timeout_not_the_header_deadline() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.header_read_timeout = Duration::from_millis(200);
        c.server.keepalive_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(&healthz(true)).await.unwrap();
        assert_eq!(read_response(&mut s).await.expect("the connection is still open").status, 200);
        // Three times the header deadline, idle between requests.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    s.write_all(&healthz(true)).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().status, 200);
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), closed_by_peer(&mut s)).await.expect("closed when idle");
    assert!(idle.elapsed() >= Duration::from_millis(1400), "closed after {:?} idle", idle.elapsed());
}

/// On a keep-alive connection, the header deadline runs from the next
/// request's first byte: a head dripped after a long idle spell is cut off
/// at `header_read_timeout`, not at `keepalive_timeout`.
#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_off_from_its_first_byte() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.header_read_timeout = Duration::from_millis(300);
        c.server.keepalive_timeout = Duration::from_secs(60);
    })
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(&healthz(true)).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 249 bytes at 20 ms each would take 5 s, keepalive_timeout is 60 s.
    tokio::time::timeout(Duration::from_secs(4), drip_head(&mut s))
        .await
        .expect("closed at the header deadline");
}

/// The soft limit on open files, from /proc (None where it is not there).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: usize =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test]
async fn thousands_of_idle_connections_are_held_cheaply_then_closed() {
    // Client and server ends both live in this process: two descriptors each.
    let n = open_files_limit().map_or(1000, |l| (l.saturating_sub(300) / 2).min(2000));
    assert!(n >= 200, "the open-files limit is too low for this test: {n}");
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.header_read_timeout = Duration::from_secs(3);
        c.server.keepalive_timeout = Duration::from_secs(3);
    })
    .await;
    let rss_before = rss_bytes();
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        if i % 2 == 0 {
            // Half have made a request and sit in keep-alive; half never sent a byte.
            s.write_all(&healthz(true)).await.unwrap();
            assert_eq!(read_response(&mut s).await.unwrap().status, 200);
        }
        idle.push(s);
    }
    let open = common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(5), |v| {
        v >= n as f64
    })
    .await;
    // Meanwhile real turns are served.
    let mut c = Conversation::new(&t.base(), "sk-busy", true);
    let a = c.turn().await;
    assert_eq!(a.status, 200);
    assert_eq!(c.turn().await.route.as_deref(), Some("continue"));
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        // Both ends of every connection are in this process. The bound is
        // about 3x what was measured (~20 KB per pair): a per-connection
        // buffer that grew to 64 KB would fail it.
        let per_connection = after.saturating_sub(before) / n;
        eprintln!("{n} idle connections ({open} open): {per_connection} bytes of RSS each");
        assert!(per_connection < 64 * 1024, "{per_connection} bytes of RSS per idle connection");
    }
    // keepalive_timeout (kept alive) and header_read_timeout (never sent a
    // byte) close every idle one, from tether's side.
    let closing = futures_util::future::join_all(idle.iter_mut().map(closed_by_peer));
    tokio::time::timeout(Duration::from_secs(15), closing).await.expect("idle connections closed by tether");
    common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(5), |v| v <= 1.0).await;
    assert_eq!(common::metric(t.addr, "tether_requests_in_flight").await, 1.0, "only this /metrics request");
    assert_eq!(emu.stats().ws_connections, 1);
}

#[tokio::test]
async fn sessions_beyond_sessions_max_evict_the_least_recently_used() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| c.sessions.max = 3).await;
    let mut sent = Vec::new();
    let mut record = |c: &mut Conversation, r: &common::Reply, input: Vec<serde_json::Value>| {
        assert_eq!(r.status, 200, "{}: {}", c.key, String::from_utf8_lossy(&r.body));
        sent.push((r.response()["id"].as_str().unwrap().to_string(), input));
    };
    let mut convs: Vec<Conversation> = (0..4)
        .map(|i| {
            let mut c = Conversation::new(&t.base(), "sk-same", false);
            c.input[1]["content"][0]["text"] = format!("task {i}").into();
            c
        })
        .collect();
    // Exactly the limit: three conversations all continue.
    for c in convs.iter_mut().take(3) {
        let input = c.input.clone();
        let r = c.turn().await;
        record(c, &r, input);
    }
    for c in convs.iter_mut().take(3) {
        let input = c.input.clone();
        let r = c.turn().await;
        assert_eq!(r.route.as_deref(), Some("continue"));
        record(c, &r, input);
    }
    assert_eq!(common::metric(t.addr, "tether_sessions_live").await, 3.0);
    // A fourth pushes out the least recently used (the first).
    let input = convs[3].input.clone();
    let r = convs[3].turn().await;
    record(&mut convs[3], &r, input);
    assert_eq!(common::metric(t.addr, "tether_sessions_live").await, 3.0);
    // Its next turn is sent whole (fresh, capacity_evicted), then continues again.
    let input = convs[0].input.clone();
    let r = convs[0].turn().await;
    assert_eq!(r.route.as_deref(), Some("fresh"));
    record(&mut convs[0], &r, input);
    let input = convs[0].input.clone();
    let r = convs[0].turn().await;
    assert_eq!(r.route.as_deref(), Some("continue"));
    record(&mut convs[0], &r, input);
    let (_, m) = common::get(&format!("http://{}/metrics", t.addr)).await;
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(
        m.lines().any(|l| l.contains("reason=\"capacity_evicted\"") && !l.ends_with(" 0")),
        "no capacity_evicted turn counted:\n{m}"
    );
    common::assert_oracle_clean(&emu, &sent);
}

/// Beyond `pool.per_tenant` or `pool.total`, a turn waits `pool.queue_timeout`
/// for a socket, then goes over plain HTTP (`upstream.fallback_http`, the
/// default) or gets 503 `tether_overloaded`.
async fn sockets_beyond_the_pool_limits(fallback: bool) {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.pool.per_tenant = 2;
        c.pool.total = 3;
        c.pool.queue_timeout = Duration::from_millis(300);
        c.upstream.fallback_http = fallback;
    })
    .await;
    let addr = t.addr;
    let beyond = |key: &str, (status, body, took, route): (u16, Vec<u8>, Duration, Option<String>)| {
        let text = String::from_utf8_lossy(&body).to_string();
        if fallback {
            assert_eq!((status, route.as_deref()), (200, Some("http_fallback")), "{key}: {text}");
        } else {
            assert_eq!(status, 503, "{key}: {text}");
            assert_eq!(error_code(&body), "tether_overloaded");
        }
        assert!(took >= Duration::from_millis(300), "{key}: answered before the queue deadline: {took:?}");
    };
    // Exactly the per-tenant limit: two slow turns of one tenant hold both its sockets.
    let slow = |key: &'static str, i: usize| {
        tokio::spawn(post(addr, key, first_turn(&format!("slow {key} {i}"), true, Some("slow=150"))))
    };
    let held = [slow("sk-t1", 0), slow("sk-t1", 1)];
    common::wait_metric(addr, "tether_upstream_sockets_open", Duration::from_secs(5), |v| v == 2.0).await;
    // The tenant's third turn waits for the queue deadline.
    beyond("sk-t1", post(addr, "sk-t1", first_turn("third", false, None)).await);
    // Another tenant still has room: the third socket in total.
    let other = slow("sk-t2", 0);
    common::wait_metric(addr, "tether_upstream_sockets_open", Duration::from_secs(5), |v| v == 3.0).await;
    // Now the total is reached too: a third tenant waits for the deadline as well.
    beyond("sk-t3", post(addr, "sk-t3", first_turn("third tenant", false, None)).await);
    for h in held.into_iter().chain([other]) {
        let (status, body, _, route) = h.await.unwrap();
        assert_eq!((status, route.as_deref()), (200, Some("fresh")), "{}", String::from_utf8_lossy(&body));
    }
    // Once sockets are free, both tenants are served over WebSocket again.
    for key in ["sk-t1", "sk-t3"] {
        let (status, body, _, route) = post(addr, key, first_turn("after", false, None)).await;
        assert_eq!((status, route.as_deref()), (200, Some("fresh")), "{}", String::from_utf8_lossy(&body));
    }
    assert!(emu.stats().ws_connections <= 3 + 1, "pool.total held: {}", emu.stats().ws_connections);
    assert_eq!(emu.stats().requests_http, if fallback { 2 } else { 0 });
    common::wait_metric(addr, "tether_requests_in_flight", Duration::from_secs(5), |v| v == 1.0).await;
}

#[tokio::test]
async fn sockets_beyond_the_pool_limits_fall_back_to_http_after_the_queue_deadline() {
    sockets_beyond_the_pool_limits(true).await;
}

#[tokio::test]
async fn sockets_beyond_the_pool_limits_get_503_after_the_queue_deadline_without_fallback() {
    sockets_beyond_the_pool_limits(false).await;
}

#[tokio::test]
async fn a_turn_queued_within_the_deadline_is_served_when_a_socket_frees() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.pool.per_tenant = 1;
        c.pool.queue_timeout = Duration::from_secs(20);
    })
    .await;
    let addr = t.addr;
    let first = tokio::spawn(post(addr, "sk-q", first_turn("first", true, Some("slow=50"))));
    common::wait_metric(addr, "tether_upstream_sockets_open", Duration::from_secs(5), |v| v == 1.0).await;
    let (status, body, _, route) = post(addr, "sk-q", first_turn("second", false, None)).await;
    assert_eq!((status, route.as_deref()), (200, Some("fresh")), "{}", String::from_utf8_lossy(&body));
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(common::metric(addr, "tether_upstream_sockets_open").await, 1.0, "one socket served both");
}

#[tokio::test]
async fn client_hang_ups_at_every_stage_leave_nothing_behind() {
    let (emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let body = first_turn("hang up", true, Some("slow=100"));
    let head = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
         authorization: Bearer sk-hang\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // During the head, during the body, after the whole request (waiting for
    // the first event), and after the first bytes of the response.
    let stages: [(&str, Vec<u8>, bool); 4] = [
        ("head", head.as_bytes()[..20].to_vec(), false),
        ("body", [head.as_bytes(), &body.as_bytes()[..10]].concat(), false),
        ("waiting", [head.as_bytes(), body.as_bytes()].concat(), false),
        ("streaming", [head.as_bytes(), body.as_bytes()].concat(), true),
    ];
    for (stage, bytes, read_some) in stages {
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        if read_some {
            let mut chunk = [0u8; 64];
            assert!(s.read(&mut chunk).await.unwrap() > 0, "{stage}: no bytes");
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(s);
    }
    // Nothing in flight, no client connection left, the drained sockets idle again.
    common::wait_metric(t.addr, "tether_requests_in_flight", Duration::from_secs(10), |v| v == 1.0).await;
    common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(10), |v| v <= 1.0)
        .await;
    common::wait_metric(t.addr, "tether_upstream_sockets_busy", Duration::from_secs(10), |v| v == 0.0).await;
    assert_eq!(emu.stats().ws_connections, 2, "the two that reached the upstream");
    // Both turns that reached the proxy have a record, as `client_gone`
    // (one hung up before its first byte, one while streaming).
    let (_, m) = common::get(&format!("http://{}/metrics", t.addr)).await;
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(
        m.lines().any(|l| l == "tether_turn_outcomes_total{outcome=\"client_gone\"} 2"),
        "hang-ups not recorded:\n{m}"
    );
    let mut c = Conversation::new(&t.base(), "sk-hang", false);
    assert_eq!(c.turn().await.status, 200);
    assert_eq!(c.turn().await.route.as_deref(), Some("continue"));
    // A drained socket holds nothing a client can continue: it is reused first.
    assert_eq!(emu.stats().ws_connections, 2, "a drained socket was reused");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_does_not_hold_up_shutdown() {
    let (_emu, mut t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.header_read_timeout = Duration::from_secs(60);
        c.server.shutdown_grace = Duration::from_secs(60);
    })
    .await;
    let mut silent = TcpStream::connect(t.addr).await.unwrap();
    common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(5), |v| v >= 2.0).await;
    t.stop();
    // Far less than either deadline: the silent connection is closed at once.
    tokio::time::timeout(Duration::from_secs(10), &mut t.done).await.expect("shut down").unwrap();
    tokio::time::timeout(Duration::from_secs(5), closed_by_peer(&mut silent)).await.expect("closed");
}

/// h2c: a client that pings an idle connection sends bytes that start no
/// request head: the connection lasts until `keepalive_timeout`, not the
/// header deadline.
#[tokio::test]
async fn an_h2c_client_pinging_an_idle_connection_is_not_cut_off_at_the_header_deadline() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    let limit = Duration::from_millis(1500);
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.keepalive_timeout = limit;
        c.server.header_read_timeout = Duration::from_millis(200);
    })
    .await;
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let health = http::Request::get(format!("http://{}/healthz", t.addr))
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let resp = send.send_request(health).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let idle_from = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the idle h2c connection was closed");
    assert!(
        idle_from.elapsed() >= limit - Duration::from_millis(50),
        "closed after {:?}",
        idle_from.elapsed()
    );
}

/// h2c: a connection with no request in progress for `keepalive_timeout`
/// gets a GOAWAY and is closed (hyper would keep it open forever), and not
/// sooner: its pings and settings are no request head to time. A stream that
/// outlasts the limit keeps its connection open: the next request on it
/// right after still works.
#[tokio::test]
async fn idle_h2c_connections_are_closed_but_not_while_a_stream_runs() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let limit = Duration::from_secs(1);
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |c| {
        c.server.keepalive_timeout = limit;
        c.server.header_read_timeout = limit / 4;
    })
    .await;
    let tcp = TcpStream::connect(t.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let driver = tokio::spawn(conn);
    // ~28 events 100 ms apart: the stream runs more than twice the limit.
    let body = serde_json::json!({
        "model": "m", "input": "hi", "stream": true,
        "metadata": {"emulator_script": "tools=0,answer=400,delta=20", "emulator_fault": "slow=100"},
    });
    let req = http::Request::post(format!("{}/responses", t.base()))
        .header("authorization", "Bearer sk-h2c")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let started = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(started.elapsed() > limit * 2, "the stream was shorter than the test needs");
    assert!(String::from_utf8_lossy(&events).contains("response.completed"));
    let health = http::Request::get(format!("http://{}/healthz", t.addr)).body(Full::default()).unwrap();
    let resp = send.send_request(health).await.expect("the connection is still open after the stream");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // Now idle: the server closes it (the driver ends) after the limit, not before.
    let idle_from = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the idle h2c connection was never closed")
        .unwrap()
        .unwrap();
    assert!(idle_from.elapsed() >= limit - Duration::from_millis(50), "closed before the limit");
    common::wait_metric(t.addr, "tether_client_connections_open", Duration::from_secs(5), |v| v <= 1.0).await;
}

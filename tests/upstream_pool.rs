//! Connect and pool tests against a tiny WebSocket server on 127.0.0.1:0 that
//! answers each `response.create` with a canned response, or refuses the
//! upgrade (401 for a bad key, 426 when told to).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tether::upstream::{Credentials, SocketSnapshot, UpstreamError, UpstreamPool, WsSettings};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// What the test server saw.
#[derive(Default)]
struct Seen {
    /// Upgrade headers per accepted connection: (authorization, beta).
    upgrades: Vec<(Option<String>, Option<String>)>,
    /// Close codes received from tether.
    closes: Vec<u16>,
}

struct TestServer {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Starts the server; `refuse` forces that status on every upgrade.
async fn server(refuse: Option<u16>) -> anyhow::Result<TestServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/responses", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut conn = 0u32;
        while let Ok((tcp, _)) = listener.accept().await {
            conn += 1;
            tokio::spawn(serve(tcp, conn, refuse, seen2.clone()));
        }
    });
    Ok(TestServer { url, seen })
}

async fn serve(tcp: tokio::net::TcpStream, conn: u32, refuse: Option<u16>, seen: Arc<Mutex<Seen>>) {
    let seen_hdr = seen.clone();
    #[allow(clippy::result_large_err)] // the signature tungstenite asks for
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let auth = header(req, "authorization");
        let status = match (refuse, auth.as_deref()) {
            (Some(s), _) => Some(s),
            (None, Some("Bearer bad")) => Some(401),
            _ => None,
        };
        if let Some(status) = status {
            let mut e = ErrorResponse::new(Some(format!(r#"{{"error":{{"code":{status}}}}}"#)));
            *e.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
            return Err(e);
        }
        if let Ok(mut s) = seen_hdr.lock() {
            s.upgrades.push((auth, header(req, "openai-beta")));
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let mut n = 0u32;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(t) if t.as_str().contains("hold") => {}
            Message::Text(_) => {
                n += 1;
                let id = format!("resp_{conn}_{n}");
                let frames = [
                    format!(
                        r#"{{"type":"response.created","sequence_number":0,"response":{{"id":"{id}","status":"in_progress"}}}}"#
                    ),
                    format!(
                        r#"{{"type":"response.completed","sequence_number":1,"response":{{"id":"{id}","status":"completed","output":[]}}}}"#
                    ),
                ];
                for f in frames {
                    if ws.send(Message::text(f)).await.is_err() {
                        return;
                    }
                }
            }
            Message::Close(f) => {
                if let Ok(mut s) = seen.lock() {
                    s.closes.push(f.map_or(1005, |f| u16::from(f.code)));
                }
                break;
            }
            _ => {}
        }
    }
}

fn creds(key: &str) -> Credentials {
    Credentials {
        authorization: HeaderValue::from_str(&format!("Bearer {key}")).ok(),
        ..Credentials::default()
    }
}

fn settings(url: &str) -> WsSettings {
    let mut s = WsSettings::new(url);
    s.connect_timeout = Duration::from_secs(5);
    s.queue_timeout = Duration::from_millis(200);
    s
}

/// A server that accepts TCP connections and never answers (nor closes them).
async fn silent_server() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let silent = TcpListener::bind("127.0.0.1:0").await?;
    let addr = silent.local_addr()?;
    let hold = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            kept.push(tcp);
        }
    });
    Ok((addr, hold))
}

/// One full turn on a lease; returns the frames.
async fn turn(lease: &mut tether::upstream::Lease) -> anyhow::Result<Vec<String>> {
    let mut frames = lease.send(r#"{"type":"response.create"}"#.into()).await?;
    let mut out = Vec::new();
    while let Some(f) = frames.next().await {
        out.push(f?.to_string());
    }
    Ok(out)
}

/// Polls until `f` holds (the socket task updates state asynchronously).
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// A pool on a fresh test server, with `tweak` applied to its settings,
/// holding three warm sockets of `tenant` (each ran a turn, so each holds a
/// response), freed in `order` a few ms apart; their ids in opening order.
async fn pool_with_warm_sockets(
    tweak: impl FnOnce(&mut WsSettings),
    tenant: u128,
    order: [usize; 3],
) -> anyhow::Result<(UpstreamPool, Vec<u64>)> {
    let srv = server(None).await?;
    let mut s = settings(&srv.url);
    tweak(&mut s);
    let pool = UpstreamPool::new(s);
    let mut leases = Vec::new();
    for _ in 0..3 {
        let mut l = pool.checkout(tenant, &creds("ka"), None).await?;
        turn(&mut l).await?;
        leases.push(Some(l));
    }
    let ids: Vec<_> = leases.iter().flatten().map(|l| l.id()).collect();
    for i in order {
        drop(leases[i].take());
        let id = ids[i];
        assert!(eventually(|| matches!(pool.status(id), SocketSnapshot::Idle { .. })).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((pool, ids))
}

#[tokio::test]
async fn turn_then_continue_on_same_socket() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let pool = UpstreamPool::new(settings(&srv.url));
    let mut lease = pool.checkout(1, &creds("k1"), None).await?;
    assert!(lease.fresh_connection());
    let id = lease.id();
    let frames = turn(&mut lease).await?;
    assert_eq!(frames.len(), 2);
    assert!(frames[1].contains("resp_1_1"));
    drop(lease);
    assert!(eventually(|| matches!(pool.status(id), SocketSnapshot::Idle { latest_response_id: Some(ref r), .. } if r == "resp_1_1")).await);
    let mut lease = pool.checkout(1, &creds("k1"), Some(id)).await?;
    assert_eq!(lease.id(), id);
    assert!(!lease.fresh_connection());
    assert_eq!(lease.latest_response_id(), Some("resp_1_1"));
    assert_eq!(pool.status(id), SocketSnapshot::Busy);
    assert!(turn(&mut lease).await?[1].contains("resp_1_2"));
    let seen = srv.seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert_eq!(seen.upgrades.len(), 1);
    assert_eq!(seen.upgrades[0].0.as_deref(), Some("Bearer k1"));
    assert_eq!(seen.upgrades[0].1.as_deref(), Some("responses_websockets=2026-02-06"));
    assert_eq!(pool.stats().opened_total, 1);
    Ok(())
}

#[tokio::test]
async fn tenants_never_share_and_busy_preference_fails() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let pool = UpstreamPool::new(settings(&srv.url));
    let a = pool.checkout(0xA, &creds("ka"), None).await?;
    let a_id = a.id();
    assert_eq!(pool.checkout(0xA, &creds("ka"), Some(a_id)).await.err(), Some(UpstreamError::Busy));
    drop(a);
    assert!(eventually(|| matches!(pool.status(a_id), SocketSnapshot::Idle { .. })).await);
    let b = pool.checkout(0xB, &creds("kb"), None).await?;
    assert_ne!(b.id(), a_id);
    assert_eq!(pool.checkout(0xB, &creds("kb"), Some(a_id)).await.err(), Some(UpstreamError::Gone));
    assert_eq!(pool.checkout(0xA, &creds("ka"), Some(999)).await.err(), Some(UpstreamError::Gone));
    let stats = pool.stats();
    assert_eq!(stats.open, 2);
    assert_eq!(stats.per_tenant.get(&0xA), Some(&1));
    assert_eq!(stats.per_tenant.get(&0xB), Some(&1));
    Ok(())
}

#[tokio::test]
async fn idle_socket_with_empty_cache_is_reused_and_warm_one_is_kept() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let pool = UpstreamPool::new(settings(&srv.url));
    let cold = pool.checkout(1, &creds("k"), None).await?;
    let cold_id = cold.id();
    drop(cold);
    assert!(eventually(|| matches!(pool.status(cold_id), SocketSnapshot::Idle { .. })).await);
    let mut again = pool.checkout(1, &creds("k"), None).await?;
    assert_eq!(again.id(), cold_id, "an idle empty socket is reused");
    turn(&mut again).await?;
    drop(again);
    assert!(
        eventually(|| matches!(
            pool.status(cold_id),
            SocketSnapshot::Idle { latest_response_id: Some(_), .. }
        ))
        .await
    );
    let other = pool.checkout(1, &creds("k"), None).await?;
    assert_ne!(other.id(), cold_id, "a warm socket is not taken while there is room");
    Ok(())
}

#[tokio::test]
async fn per_tenant_limit_queues_then_times_out_or_gets_released_socket() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let mut s = settings(&srv.url);
    s.per_tenant = 1;
    let pool = UpstreamPool::new(s);
    let held = pool.checkout(1, &creds("k"), None).await?;
    let held_id = held.id();
    let started = tokio::time::Instant::now();
    assert_eq!(pool.checkout(1, &creds("k"), None).await.err(), Some(UpstreamError::PoolFull));
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A waiter is served as soon as the lease is returned.
    let p2 = pool.clone();
    let waiter = tokio::spawn(async move { p2.checkout(1, &creds("k"), None).await.map(|l| l.id()) });
    tokio::task::yield_now().await;
    drop(held);
    assert_eq!(waiter.await??, held_id);
    // Another tenant is not limited by this one.
    pool.checkout(2, &creds("k2"), None).await?;
    Ok(())
}

#[tokio::test]
async fn total_limit_evicts_another_tenants_idle_socket() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let mut s = settings(&srv.url);
    s.total = 1;
    let pool = UpstreamPool::new(s);
    let a = pool.checkout(0xA, &creds("ka"), None).await?;
    let a_id = a.id();
    assert_eq!(pool.checkout(0xB, &creds("kb"), None).await.err(), Some(UpstreamError::PoolFull));
    drop(a);
    assert!(eventually(|| matches!(pool.status(a_id), SocketSnapshot::Idle { .. })).await);
    let b = pool.checkout(0xB, &creds("kb"), None).await?;
    assert_ne!(b.id(), a_id);
    assert_eq!(pool.status(a_id), SocketSnapshot::Gone);
    assert_eq!(pool.stats().open, 1);
    let seen = srv.seen.clone();
    assert!(eventually(|| seen.lock().map(|s| s.closes == [1000]).unwrap_or(false)).await);
    Ok(())
}

#[tokio::test]
async fn at_the_total_limit_the_socket_idle_the_longest_is_closed() -> anyhow::Result<()> {
    // Tenant A: three warm sockets, freed in the order 2, 0, 1.
    let (pool, ids) = pool_with_warm_sockets(|s| s.total = 3, 0xA, [2, 0, 1]).await?;
    // Tenant B needs room: the socket idle the longest (2) goes, the others stay.
    let b = pool.checkout(0xB, &creds("kb"), None).await?;
    assert_eq!(pool.status(ids[2]), SocketSnapshot::Gone);
    for id in [ids[0], ids[1]] {
        assert!(matches!(pool.status(id), SocketSnapshot::Idle { .. }), "{id} was closed");
    }
    drop(b);
    Ok(())
}

#[tokio::test]
async fn at_the_tenant_limit_a_fresh_turn_takes_the_socket_idle_the_longest() -> anyhow::Result<()> {
    // Three warm sockets (each holds a response), freed in the order 1, 2, 0.
    let (pool, ids) = pool_with_warm_sockets(|s| s.per_tenant = 3, 0xA, [1, 2, 0]).await?;
    // No room for a fourth: the fresh turn takes the one idle the longest (1),
    // then the next (2); the most recently used (0) is kept for its conversation.
    let first = pool.checkout(0xA, &creds("ka"), None).await?;
    assert_eq!(first.id(), ids[1]);
    let second = pool.checkout(0xA, &creds("ka"), None).await?;
    assert_eq!(second.id(), ids[2]);
    assert!(matches!(pool.status(ids[0]), SocketSnapshot::Idle { latest_response_id: Some(_), .. }));
    Ok(())
}

/// A socket continued after it became idle goes to the back of the line: a
/// fresh turn at the tenant limit takes the one idle the longest since.
#[tokio::test]
async fn a_continued_socket_is_no_longer_the_one_idle_the_longest() -> anyhow::Result<()> {
    let (pool, ids) = pool_with_warm_sockets(|s| s.per_tenant = 3, 0xB, [0, 1, 2]).await?;
    // The conversation on socket 0 continues: it is now the most recently used.
    let mut again = pool.checkout(0xB, &creds("ka"), Some(ids[0])).await?;
    turn(&mut again).await?;
    drop(again);
    assert!(eventually(|| matches!(pool.status(ids[0]), SocketSnapshot::Idle { .. })).await);
    let first = pool.checkout(0xB, &creds("ka"), None).await?;
    assert_eq!(first.id(), ids[1]);
    let second = pool.checkout(0xB, &creds("ka"), None).await?;
    assert_eq!(second.id(), ids[2]);
    let third = pool.checkout(0xB, &creds("ka"), None).await?;
    assert_eq!(third.id(), ids[0]);
    Ok(())
}

#[tokio::test]
async fn max_age_rotates_between_turns() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let mut s = settings(&srv.url);
    s.max_age = Duration::from_millis(150);
    let pool = UpstreamPool::new(s);
    let mut old = pool.checkout(1, &creds("k"), None).await?;
    let old_id = old.id();
    turn(&mut old).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past max_age while leased: the turn in progress is not cut.
    turn(&mut old).await?;
    drop(old);
    assert_eq!(pool.status(old_id), SocketSnapshot::Gone);
    assert_eq!(pool.checkout(1, &creds("k"), Some(old_id)).await.err(), Some(UpstreamError::Gone));
    let new = pool.checkout(1, &creds("k"), None).await?;
    assert_ne!(new.id(), old_id);
    assert!(new.fresh_connection());
    let seen = srv.seen.clone();
    assert!(eventually(|| seen.lock().map(|s| s.closes == [1000]).unwrap_or(false)).await);
    Ok(())
}

#[tokio::test]
async fn handshake_statuses_map_to_errors() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let pool = UpstreamPool::new(settings(&srv.url));
    let err = pool.checkout(1, &creds("bad"), None).await.err();
    let Some(UpstreamError::Handshake { status, body }) = err else {
        anyhow::bail!("expected a handshake error, got {err:?}");
    };
    assert_eq!(status, 401);
    assert_eq!(&body[..], br#"{"error":{"code":401}}"#);
    let e = UpstreamError::Handshake { status, body };
    assert!(!e.wants_http_fallback() && !e.retryable_before_output());
    assert_eq!(pool.stats().open, 0);
    for refuse in [426, 404] {
        let srv = server(Some(refuse)).await?;
        let pool = UpstreamPool::new(settings(&srv.url));
        let err = pool.checkout(1, &creds("k"), None).await.err();
        assert!(matches!(err, Some(UpstreamError::Handshake { status, .. }) if status == refuse));
        assert!(err.is_some_and(|e| e.wants_http_fallback()));
    }
    // Nobody listening: a connect error, which may fall back.
    let dead = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/responses", dead.local_addr()?);
    drop(dead);
    let err = UpstreamPool::new(settings(&url)).checkout(1, &creds("k"), None).await.err();
    assert!(matches!(err, Some(UpstreamError::Connect(_))));
    Ok(())
}

#[tokio::test]
async fn close_all_closes_normally() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let pool = UpstreamPool::new(settings(&srv.url));
    let a = pool.checkout(1, &creds("k"), None).await?;
    let b = pool.checkout(1, &creds("k"), None).await?;
    drop((a, b));
    tokio::time::timeout(Duration::from_secs(5), pool.close_all()).await?;
    let seen = srv.seen.clone();
    assert!(eventually(|| seen.lock().map(|s| s.closes == [1000, 1000]).unwrap_or(false)).await);
    assert_eq!(pool.stats().open, 0);
    assert!(pool.checkout(1, &creds("k"), None).await.is_err());
    Ok(())
}

#[tokio::test]
async fn spare_sockets_are_opened_after_first_use() -> anyhow::Result<()> {
    let srv = server(None).await?;
    let mut s = settings(&srv.url);
    s.spares_per_tenant = 1;
    let pool = UpstreamPool::new(s);
    let first = pool.checkout(1, &creds("k"), None).await?;
    assert!(first.fresh_connection());
    assert!(eventually(|| pool.stats().open == 2).await, "one spare opened");
    let second = pool.checkout(1, &creds("k"), None).await?;
    assert!(!second.fresh_connection(), "the spare was ready");
    assert_ne!(second.id(), first.id());
    assert!(eventually(|| pool.stats().open == 3).await, "the spare is replaced");
    assert_eq!(pool.stats().per_tenant.get(&2), None);
    Ok(())
}

#[tokio::test]
async fn silent_server_times_out_and_tls_failure_is_a_connect_error() -> anyhow::Result<()> {
    // Accepts TCP, never answers: the connect deadline applies.
    let (addr, hold) = silent_server().await?;
    let mut s = settings(&format!("ws://{addr}/v1/responses"));
    s.connect_timeout = Duration::from_millis(100);
    let err = UpstreamPool::new(s.clone()).checkout(1, &creds("k"), None).await.err();
    assert!(matches!(err, Some(UpstreamError::Connect(ref m)) if m.contains("timed out")), "{err:?}");
    // wss:// goes through rustls; a plain WebSocket server fails the TLS handshake.
    let srv = server(None).await?;
    s.url = srv.url.replace("ws://", "wss://");
    s.connect_timeout = Duration::from_secs(5);
    let err = UpstreamPool::new(s).checkout(1, &creds("k"), None).await.err();
    assert!(matches!(err, Some(UpstreamError::Connect(_))), "{err:?}");
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn a_checkout_cancelled_mid_handshake_gives_its_slot_back() -> anyhow::Result<()> {
    // Accepts TCP, never answers: every handshake hangs until its deadline.
    let (addr, hold) = silent_server().await?;
    let mut s = settings(&format!("ws://{addr}/v1/responses"));
    s.per_tenant = 1;
    s.connect_timeout = Duration::from_millis(300);
    s.queue_timeout = Duration::from_millis(100);
    let pool = UpstreamPool::new(s);
    // The request goes away (client hang-up) while its socket is being opened.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(50), pool.checkout(1, &creds("k"), None)).await;
    assert!(cancelled.is_err());
    // The slot it reserved is free again: the next checkout opens a socket
    // (and times out connecting) instead of finding the pool full.
    let err = pool.checkout(1, &creds("k"), None).await.err();
    assert!(matches!(err, Some(UpstreamError::Connect(_))), "{err:?}");
    hold.abort();
    Ok(())
}

/// A socket whose session the store retired (`orphan`) is taken for a fresh
/// turn before a new socket is opened, as one with an empty cache is; a
/// socket that holds another response than the one named keeps its place.
#[tokio::test]
async fn an_orphaned_socket_is_reused_before_a_new_one_is_opened() -> anyhow::Result<()> {
    let (pool, ids) = pool_with_warm_sockets(|s| s.per_tenant = 8, 0xC, [0, 1, 2]).await?;
    let latest = |id| match pool.status(id) {
        SocketSnapshot::Idle { latest_response_id: Some(r), .. } => r,
        other => panic!("socket {id}: {other:?}"),
    };
    let opened = pool.stats().opened_total;
    pool.orphan(ids[1], &latest(ids[1]));
    pool.orphan(ids[2], "resp_not_its_latest");
    let reused = pool.checkout(0xC, &creds("ka"), None).await?;
    assert_eq!(reused.id(), ids[1], "the orphaned socket is taken");
    assert_eq!(pool.stats().opened_total, opened, "no socket opened");
    // It still says which response it holds (a client chaining by itself may ask).
    drop(reused);
    assert!(
        eventually(|| matches!(
            pool.status(ids[1]),
            SocketSnapshot::Idle { latest_response_id: Some(_), .. }
        ))
        .await
    );
    let reused = pool.checkout(0xC, &creds("ka"), None).await?;
    assert_eq!(reused.id(), ids[1], "still as good as cold until it serves a turn");
    let new = pool.checkout(0xC, &creds("ka"), None).await?;
    assert!(!ids.contains(&new.id()), "the warm sockets are kept: a new one is opened");
    Ok(())
}

//! The HTTP front and pass-through: JSON, streamed SSE, large bodies, the
//! body limit, unreachable upstreams, graceful shutdown. The upstream is a
//! small hyper server written here, on 127.0.0.1:0.

#![allow(clippy::unwrap_used)] // test upstream: a panic is a failed test

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, mpsc};

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the test upstream saw, and the gate that paces its SSE stream.
#[derive(Default)]
struct Upstream {
    seen: Mutex<Vec<(String, String, http::HeaderMap, usize)>>,
    gate: Notify,
}

async fn upstream_handler(
    state: Arc<Upstream>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let method = req.method().to_string();
    let pq = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let headers = req.headers().clone();
    if pq.starts_with("/v1/sse") {
        state.seen.lock().unwrap().push((method, pq, headers, 0));
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let st = state.clone();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from("event: one\ndata: {\"n\":1}\n\n")).await;
            st.gate.notified().await; // held until the test saw event one through tether
            let _ = tx.send(Bytes::from("event: two\ndata: {\"n\":2}\n\n")).await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap();
        return Ok(resp);
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    state.seen.lock().unwrap().push((method, pq, headers, body.len()));
    let resp = Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("x-upstream", "yes")
        .body(Full::new(body).boxed_unsync())
        .unwrap();
    Ok(resp)
}

async fn spawn_upstream() -> (SocketAddr, Arc<Upstream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Upstream::default());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| upstream_handler(st.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

#[tokio::test]
async fn healthz_answers() {
    let t = common::start(common::config_for("http://127.0.0.1:9/v1")).await;
    let (status, body) = common::get(&format!("http://{}/healthz", t.addr)).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], br#"{"status":"ok"}"#);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let t = common::start(common::config_for("http://127.0.0.1:9/v1")).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.get(format!("http://{}/healthz", t.addr).parse().unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn json_passes_through_with_method_path_query_headers_and_status() {
    let (up, state) = spawn_upstream().await;
    let t = common::start(common::config_for(&format!("http://{up}/v1"))).await;
    let req = Request::post(format!("{}/chat/completions?x=1&y=two", t.base()))
        .header("authorization", "Bearer sk-test-key")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must-not-pass")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(br#"{"model":"m"}"#)))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"model":"m"}"#);
    let seen = state.seen.lock().unwrap();
    let (method, pq, headers, _) = &seen[0];
    assert_eq!(method, "POST");
    assert_eq!(pq, "/v1/chat/completions?x=1&y=two");
    assert_eq!(headers["authorization"], "Bearer sk-test-key");
    assert_eq!(headers["x-custom"], "kept");
    assert!(headers.get("x-hop").is_none(), "headers named by Connection are hop-by-hop");
    assert_eq!(headers["host"], up.to_string(), "Host is rewritten to the upstream");
}

#[tokio::test]
async fn sse_arrives_event_by_event() {
    let (up, state) = spawn_upstream().await;
    let t = common::start(common::config_for(&format!("http://{up}/v1"))).await;
    let req = Request::get(format!("{}/sse", t.base())).body(Full::new(Bytes::new())).unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The upstream holds event two until we release it: event one must come first.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"event: one\ndata: {\"n\":1}\n\n");
    state.gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"event: two\ndata: {\"n\":2}\n\n");
}

#[tokio::test]
async fn large_bodies_pass_both_ways() {
    let (up, state) = spawn_upstream().await;
    let t = common::start(common::config_for(&format!("http://{up}/v1"))).await;
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let (status, body) = common::post_json(&format!("{}/files", t.base()), big.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(body.len(), big.len());
    assert!(body[..] == big[..]);
    assert_eq!(state.seen.lock().unwrap()[0].3, big.len());
}

#[tokio::test]
async fn body_limit_gives_413_in_the_api_shape() {
    let (up, state) = spawn_upstream().await;
    let mut config = common::config_for(&format!("http://{up}/v1"));
    config.server.max_body_bytes = 1024;
    let t = common::start(config).await;
    for path in ["files", "responses"] {
        let (status, body) = common::post_json(&format!("{}/{path}", t.base()), vec![b'x'; 4096]).await;
        assert_eq!(status, 413, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_too_large");
        assert!(v["error"]["message"].as_str().unwrap().contains("1024"));
    }
    // A chunked body (no Content-Length) over the limit is cut off too.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; 512])))),
    );
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, StreamBody<_>>(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = Request::post(format!("{}/files", t.base())).body(StreamBody::new(chunks)).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(
        state.seen.lock().unwrap().iter().all(|s| s.3 <= 1024),
        "nothing over the limit reached upstream whole"
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_502_json() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let t = common::start(common::config_for(&format!("http://{addr}/v1"))).await;
    let (status, body) = common::get(&format!("{}/models", t.base())).await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    for key in ["message", "type", "param", "code"] {
        assert!(v["error"].get(key).is_some(), "{key}");
    }
}

/// A client in WebSocket mode (Codex with `supports_websockets`) is told
/// 426, as by a server without the mode, so it falls back to HTTP at once;
/// the upgrade never reaches the upstream. A GET without the upgrade
/// (`GET /v1/responses/{id}`) still passes through.
#[tokio::test]
async fn a_websocket_upgrade_on_responses_gets_426_and_nothing_goes_upstream() {
    use tokio_tungstenite::tungstenite::Error as WsError;

    let (up, state) = spawn_upstream().await;
    let t = common::start(common::config_for(&format!("http://{up}/v1"))).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/v1/responses",
        t.addr
    ))
    .unwrap();
    req.headers_mut().insert("authorization", "Bearer sk-ws-client".parse().unwrap());
    let Err(WsError::Http(resp)) = tokio_tungstenite::connect_async(req).await else {
        panic!("the upgrade was not refused");
    };
    assert_eq!(resp.status(), 426);
    let body: serde_json::Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
    assert_eq!(body["error"]["code"], "websocket_not_supported");
    assert!(state.seen.lock().unwrap().is_empty(), "the upgrade reached the upstream");
    let (status, _) = common::get(&format!("{}/responses/resp_1", t.base())).await;
    assert_eq!(status, 201);
    assert_eq!(state.seen.lock().unwrap()[0].1, "/v1/responses/resp_1");
}

#[tokio::test]
async fn unknown_routes_get_404_json() {
    let t = common::start(common::config_for("http://127.0.0.1:9/v1")).await;
    let (status, body) = common::get(&format!("http://{}/nope", t.addr)).await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn graceful_shutdown_drains_an_open_stream() {
    let (up, state) = spawn_upstream().await;
    let mut t = common::start(common::config_for(&format!("http://{up}/v1"))).await;
    let req = Request::get(format!("{}/sse", t.base())).body(Full::new(Bytes::new())).unwrap();
    let resp = common::client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"event: one"));
    t.stop();
    // Once stopped, the listener is closed: new connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(t.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after shutdown");
    assert!(!t.done.is_finished(), "serve must wait for the open stream");
    state.gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"event: two\ndata: {\"n\":2}\n\n");
    tokio::time::timeout(Duration::from_secs(10), t.done).await.expect("serve returned").unwrap();
}

#[tokio::test]
async fn shutdown_grace_cuts_streams_that_never_end() {
    let (up, _state) = spawn_upstream().await;
    let mut config = common::config_for(&format!("http://{up}/v1"));
    config.server.shutdown_grace = Duration::from_millis(200);
    let mut t = common::start(config).await;
    let req = Request::get(format!("{}/sse", t.base())).body(Full::new(Bytes::new())).unwrap();
    let resp = common::client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let _first = body.frame().await.unwrap().unwrap();
    t.stop();
    tokio::time::timeout(Duration::from_secs(10), t.done).await.expect("serve returned after grace").unwrap();
    // The stream was cut: the body ends without event two (error or end).
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.expect("body ended");
    assert!(rest.map(|b| b.to_bytes().is_empty()).unwrap_or(true));
}

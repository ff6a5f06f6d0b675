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

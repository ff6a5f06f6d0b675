//! The HTTPS client: pass-through of every route tether does not manage, and
//! the full-request HTTP fallback of the managed path.
//!
//! One pooled hyper-util client over rustls (webpki roots; plain `http://`
//! for local upstreams). Bodies stream both ways without buffering.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ProxyError;
use crate::http::body::{Body, BoxError};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A client for the upstream's HTTP API, rooted at `upstream.base_url`.
#[derive(Clone)]
pub struct HttpUpstream {
    client: Client<Connector, Body>,
    base: String,
    default_auth: Option<HeaderValue>,
    request_timeout: Duration,
    body_limit: usize,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream").field("base", &self.base).finish_non_exhaustive()
    }
}

/// How long an idle keep-alive connection to the upstream stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those named by `Connection`, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names present
    // instead of a hashed lookup for each hop-by-hop name.
    if !headers.keys().any(|k| *k == header::UPGRADE || HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

impl HttpUpstream {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1`). `api_key` is
    /// sent only on requests that carry no `Authorization` of their own.
    /// Streamed request bodies longer than `body_limit` are cut off with 413.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
        body_limit: usize,
    ) -> Self {
        Self::with_idle_timeout(
            base_url,
            api_key,
            connect_timeout,
            request_timeout,
            body_limit,
            POOL_IDLE_TIMEOUT,
        )
    }

    fn with_idle_timeout(
        base_url: &str,
        api_key: Option<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
        body_limit: usize,
        idle_timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .unwrap_or_else(|_| unreachable_tls())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        // The idle timeout only takes effect with a timer: without one, idle
        // connections (and their tasks) stay until the upstream closes them.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .build(https);
        let default_auth =
            api_key.and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok()).map(|mut v| {
                v.set_sensitive(true);
                v
            });
        HttpUpstream {
            client,
            base: base_url.trim_end_matches('/').to_string(),
            default_auth,
            request_timeout,
            body_limit,
        }
    }

    /// The upstream URI for a downstream path under `/v1` (`suffix` starts
    /// with `/` and carries the query string).
    pub fn uri(&self, suffix: &str) -> Result<Uri, ProxyError> {
        format!("{}{}", self.base, suffix)
            .parse()
            .map_err(|_| ProxyError::BadRequest { message: format!("invalid path {suffix:?}"), param: None })
    }

    /// Forwards `req` to `suffix` under the base URL: method, headers (minus
    /// hop-by-hop, Host rewritten), streamed body; returns the upstream's
    /// status, headers and streamed body unchanged.
    pub async fn forward(&self, req: Request<Body>, suffix: &str) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        parts.uri = self.uri(suffix)?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        self.add_default_auth(&mut parts.headers);
        let body = http_body_util::Limited::new(body, self.body_limit).boxed_unsync();
        match self.send(Request::from_parts(parts, body)).await {
            Err(ProxyError::BodyTooLarge { .. }) => Err(ProxyError::BodyTooLarge { limit: self.body_limit }),
            other => other,
        }
    }

    /// Sends a complete request (used by the HTTP fallback).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let fut = self.client.request(req);
        let resp = match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout(self.request_timeout)),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
    }

    /// The configured key's `Authorization` value, if any.
    pub fn default_auth(&self) -> Option<&HeaderValue> {
        self.default_auth.as_ref()
    }

    /// Adds the configured key when the request has no `Authorization`.
    pub fn add_default_auth(&self, headers: &mut HeaderMap) {
        if let (false, Some(auth)) = (headers.contains_key(header::AUTHORIZATION), &self.default_auth) {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
    }

    /// A complete POST of `body` to `suffix` with `headers` (already filtered).
    pub async fn post(
        &self,
        suffix: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, ProxyError> {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        self.add_default_auth(&mut headers);
        let mut req = Request::post(self.uri(suffix)?)
            .body(crate::http::body::full(body))
            .map_err(|e| ProxyError::UpstreamFailed(e.to_string()))?;
        *req.headers_mut() = headers;
        self.send(req).await
    }
}

/// The request body tripped our size limit, or the upstream is unreachable.
fn classify(e: hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            // `forward` puts the configured limit back in.
            return ProxyError::BodyTooLarge { limit: 0 };
        }
        source = s.source();
    }
    if e.is_connect() {
        ProxyError::UpstreamUnreachable(error_chain(&e))
    } else {
        ProxyError::UpstreamFailed(error_chain(&e))
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn unreachable_tls() -> ! {
    // The ring provider always supports the default protocol versions.
    panic!("rustls ring provider rejected the default protocol versions")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use tokio::sync::mpsc;

    use super::*;

    /// An idle keep-alive connection to the upstream (and the task serving
    /// it) is closed after the pool's idle timeout, not kept until the
    /// upstream closes it.
    #[tokio::test]
    async fn idle_upstream_connections_are_closed_after_the_idle_timeout() -> Result<(), BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (closed_tx, mut closed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    });
                    let conn = hyper::server::conn::http1::Builder::new();
                    let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                    let _ = closed_tx.send(());
                });
            }
        });
        let idle = Duration::from_millis(200);
        let secs = Duration::from_secs(5);
        let up = HttpUpstream::with_idle_timeout(&format!("http://{addr}/v1"), None, secs, secs, 1024, idle);
        let resp = up.post("/responses", HeaderMap::new(), Bytes::from_static(b"{}")).await?;
        resp.into_body().collect().await?;
        // The client stays alive: only the pool's timer can close the connection.
        let waited = tokio::time::timeout(idle * 10, closed.recv()).await;
        assert!(waited.is_ok(), "the idle connection was still open after {:?}", idle * 10);
        drop(up);
        Ok(())
    }

    #[test]
    fn hop_by_hop_headers_go_with_or_without_a_connection_header() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        let clean = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, clean, "nothing to strip: nothing changes");
        for (name, value) in [("keep-alive", "timeout=5"), ("te", "trailers"), ("upgrade", "websocket")] {
            let mut with = clean.clone();
            with.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
            strip_hop_by_hop(&mut with);
            assert_eq!(with, clean, "{name} is hop-by-hop");
        }
        let mut named = clean.clone();
        named.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        named.insert(HeaderName::from_static("x-hop"), HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut named);
        assert_eq!(named, clean, "Connection and the headers it names are hop-by-hop");
    }
}

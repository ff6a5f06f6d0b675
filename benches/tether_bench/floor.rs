//! The floor under any hyper/tokio proxy: a reverse proxy that does nothing
//! but relay, built from the same parts as tether (hyper-util's server
//! builder, HTTP/1 with h2c, and its pooled client, one current-thread tokio runtime, TCP_NODELAY
//! both ways) and none of its work (no body read, no parse, no socket pool).
//! `overhead` runs it as a child process, like tether and nginx, so what it
//! adds and the CPU it burns per request separate "a proxy in Rust on this
//! machine" from "what tether does on top".

use std::convert::Infallible;
use std::io::Write;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Incoming>;

/// Serves on 127.0.0.1 (port 0), relaying every request to `upstream`
/// (`http://host:port`, no path), until killed. Prints `listening on ADDR`.
pub fn serve(upstream: &str) -> anyhow::Result<()> {
    let upstream: hyper::Uri = upstream.parse()?;
    let authority = upstream.authority().map(|a| a.to_string()).unwrap_or_default();
    anyhow::ensure!(
        upstream.scheme_str() == Some("http") && !authority.is_empty(),
        "upstream: http://host:port"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (client, authority) = (client.clone(), authority.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| relay(client.clone(), authority.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// The request as it came (method, path, headers, streamed body) to the
/// upstream; its answer as it comes back. A failure is a 502.
async fn relay(
    client: Upstream,
    authority: String,
    req: Request<Incoming>,
) -> Result<Response<http_body_util::Either<Incoming, String>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{authority}{path}").parse() else {
        return Ok(bad_gateway("bad uri".into()));
    };
    parts.uri = uri;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(http_body_util::Either::Left)),
        Err(e) => Ok(bad_gateway(e.to_string())),
    }
}

fn bad_gateway(why: String) -> Response<http_body_util::Either<Incoming, String>> {
    let mut resp = Response::new(http_body_util::Either::Right(why));
    *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    resp
}

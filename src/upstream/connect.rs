//! Opening one upstream WebSocket: the upgrade request with the client's
//! credentials, rustls with webpki roots for `wss://`, and the mapping of a
//! refused upgrade to [`UpstreamError::Handshake`].

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::{Credentials, UpstreamError, WsSettings};

/// The beta header value for WebSocket mode.
const BETA: &str = "responses_websockets=2026-02-06";

/// An open upstream WebSocket.
pub type UpstreamWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// rustls (ring) with the webpki root store, built once.
fn tls_connector() -> Result<Connector, UpstreamError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
    });
    config.clone().map(Connector::Rustls).map_err(|e| UpstreamError::Connect(format!("tls setup: {e}")))
}

/// Opens a WebSocket to `settings.url` with `creds`, within
/// `settings.connect_timeout`.
pub async fn connect(settings: &WsSettings, creds: &Credentials) -> Result<UpstreamWs, UpstreamError> {
    let mut req = settings
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| UpstreamError::Connect(format!("bad upstream url: {e}")))?;
    let headers = req.headers_mut();
    let pairs = [
        ("authorization", &creds.authorization),
        ("openai-organization", &creds.organization),
        ("openai-project", &creds.project),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            headers.insert(name, v.clone());
        }
    }
    if settings.beta_header {
        headers.insert("openai-beta", HeaderValue::from_static(BETA));
    }
    let connector = match settings.url.starts_with("wss:") {
        true => Some(tls_connector()?),
        false => None,
    };
    // Small per-socket buffers: a sidecar holds one socket per live
    // conversation, and tungstenite's 128 KiB defaults cost ~250 KiB each.
    // Larger frames still work (buffers grow); writes flush per frame.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
    let attempt = tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, connector);
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Err(_) => Err(UpstreamError::Connect("connect timed out".into())),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(WsError::Http(resp))) => Err(UpstreamError::Handshake {
            status: resp.status().as_u16(),
            body: resp.body().clone().map(Bytes::from).unwrap_or_default(),
        }),
        Ok(Err(e)) => Err(UpstreamError::Connect(e.to_string())),
    }
}

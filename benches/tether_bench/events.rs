//! Reading tether's `/debug/events` decision records.

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub struct Tap {
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl Tap {
    pub async fn start(addr: std::net::SocketAddr) -> anyhow::Result<Tap> {
        let c = crate::common::client();
        let req = http::Request::get(format!("http://{addr}/debug/events")).body(Default::default())?;
        let resp = c.request(req).await?;
        anyhow::ensure!(resp.status() == 200, "/debug/events answered {}", resp.status());
        let mut body = resp.into_body();
        let _hello = body.frame().await;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    if let Some(json) = block.lines().find_map(|l| l.strip_prefix("data: "))
                        && let Ok(v) = serde_json::from_str(json)
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Tap { rx: tokio::sync::Mutex::new(rx) })
    }

    pub async fn next(&self, within: Duration) -> anyhow::Result<Value> {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(within, rx.recv()).await?.ok_or_else(|| anyhow::anyhow!("event stream ended"))
    }
}

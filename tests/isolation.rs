//! Two keys never share a debug view: a reader of `/debug/sessions` or
//! `/debug/events` that sends credentials sees its own tenant and nobody
//! else's (and never a key); one that sends none is the operator and sees
//! every tenant, by hash only.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Conversation;
use http_body_util::{BodyExt, Full};
use tether::emulator::EmulatorConfig;

const KEY_A: &str = "sk-isolation-tenant-a-SECRET";
const KEY_B: &str = "sk-isolation-tenant-b-SECRET";

async fn get_as(url: &str, key: Option<&str>) -> hyper::Response<hyper::body::Incoming> {
    let mut req = http::Request::get(url);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    common::client().request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap()
}

async fn sessions_as(addr: std::net::SocketAddr, key: Option<&str>) -> serde_json::Value {
    let resp = get_as(&format!("http://{addr}/debug/sessions"), key).await;
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("SECRET"), "a key in /debug/sessions: {text}");
    serde_json::from_slice(&body).unwrap()
}

fn tenants(doc: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tenant"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Reads SSE records from `/debug/events` until `n` turn records arrived.
async fn turn_records(body: &mut hyper::body::Incoming, n: usize) -> Vec<serde_json::Value> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let frame =
            tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            assert!(!block.contains("SECRET"), "a key in /debug/events: {block}");
            if let Some(json) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                out.push(serde_json::from_str(json).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn each_tenant_sees_only_its_own_sessions_and_turns() {
    let (_emu, t) = common::emulator_and_tether(EmulatorConfig::default(), |_| {}).await;
    let events_url = format!("http://{}/debug/events", t.addr);
    let mut reader_a = get_as(&events_url, Some(KEY_A)).await.into_body();
    let mut reader_b = get_as(&events_url, Some(KEY_B)).await.into_body();
    let mut operator = get_as(&events_url, None).await.into_body();

    // Turns interleaved: B, A, B, A.
    let mut a = Conversation::new(&t.base(), KEY_A, true);
    let mut b = Conversation::new(&t.base(), KEY_B, false);
    for _ in 0..2 {
        assert_eq!(b.turn().await.status, 200);
        assert_eq!(a.turn().await.status, 200);
    }

    // /debug/events: each tenant's reader gets its own two turns, in order;
    // the operator gets all four.
    let mine_a = turn_records(&mut reader_a, 2).await;
    let mine_b = turn_records(&mut reader_b, 2).await;
    let all = turn_records(&mut operator, 4).await;
    let tenant_of = |r: &serde_json::Value| r["tenant"].as_str().unwrap().to_string();
    let (ta, tb) = (tenant_of(&mine_a[0]), tenant_of(&mine_b[0]));
    assert_ne!(ta, tb, "two keys, two tenants");
    assert!(mine_a.iter().all(|r| tenant_of(r) == ta), "{mine_a:?}");
    assert!(mine_b.iter().all(|r| tenant_of(r) == tb), "{mine_b:?}");
    assert_eq!(
        all.iter().map(tenant_of).collect::<Vec<_>>(),
        [tb.clone(), ta.clone(), tb.clone(), ta.clone()]
    );
    // The next record A's reader gets is A's next turn, never B's.
    assert_eq!(b.turn().await.status, 200);
    assert_eq!(a.turn().await.status, 200);
    assert_eq!(tenant_of(&turn_records(&mut reader_a, 1).await[0]), ta);

    // /debug/sessions: the same split.
    let (sa, sb, sall) = (
        sessions_as(t.addr, Some(KEY_A)).await,
        sessions_as(t.addr, Some(KEY_B)).await,
        sessions_as(t.addr, None).await,
    );
    assert_eq!(tenants(&sa), vec![ta.clone()]);
    assert_eq!(tenants(&sb), vec![tb.clone()]);
    let mut both = vec![ta, tb];
    both.sort();
    assert_eq!(tenants(&sall), both);
    assert_eq!(sa["live"], 1);
    assert_eq!(sb["live"], 1);
    assert_eq!(sall["live"], 2);
    assert_eq!(sa["sockets_open"], 1, "A sees its own socket count");
    assert_eq!(sall["sockets_open"], 2);
    // A key nobody has used sees nothing.
    let stranger = sessions_as(t.addr, Some("sk-isolation-stranger-SECRET")).await;
    assert_eq!(stranger["live"], 0);
    assert_eq!(stranger["sockets_open"], 0);
}

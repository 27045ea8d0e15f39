//! No token, key, secret or signature in any log line: the real binary at debug level
//! (every crate's debug logs, JSON) serves good and bad bearer tokens, WebSocket
//! `auth` ops and HMAC-signed requests; then its whole output is searched for each
//! credential it saw.

use crate::common;

use std::time::Duration;

use common::process::spawn_server;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use stocksblitz_api::auth::hmac;
use stocksblitz_api::auth::{Role, Tier, Tokens};
use tokio_tungstenite::tungstenite::Message;

const JWT_SECRET: &str = "log-test-jwt-secret-0123456789abcdef-XYZ";
const SVC_SECRET: &str = "log-test-service-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_the_logs() {
    use futures_util::SinkExt;
    let dir = fresh_dir("secret-logs");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    let log = dir.join("server.log");
    let text = test_config(|d| {
        d["log"]["level"] = toml::Value::String("debug".into());
        d["log"]["format"] = toml::Value::String("json".into());
        add_service(d, "algo-log", "SBZ_TEST_LOG_SVC_SECRET", "bob", &["read", "place"]);
    });
    std::fs::write(&config, text).expect("config");
    let server = spawn_server(
        &config,
        &log,
        &[("SBZ_JWT_SECRET", JWT_SECRET), ("SBZ_TEST_LOG_SVC_SECRET", SVC_SECRET)],
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let tokens = Tokens::new(JWT_SECRET.as_bytes(), "stocksblitz", "stocksblitz-api", 30);
    let good = tokens
        .mint("alice", Role::Trader, Tier::Standard, now, 600)
        .expect("mint");
    let expired = tokens
        .mint("alice", Role::Trader, Tier::Standard, now - 7_200, 600)
        .expect("mint");
    let forged = Tokens::new(
        b"some-other-key-0123456789abcdef-0000",
        "stocksblitz",
        "stocksblitz-api",
        30,
    )
    .mint("alice", Role::Admin, Tier::Premium, now, 600)
    .expect("mint");
    let http = reqwest::Client::new();
    for (t, want) in [
        (&good, StatusCode::OK),
        (&expired, StatusCode::UNAUTHORIZED),
        (&forged, StatusCode::UNAUTHORIZED),
    ] {
        let r = http
            .get(format!("{}/orders", server.base))
            .bearer_auth(t)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), want);
    }
    let r = http
        .post(format!("{}/orders", server.base))
        .bearer_auth(&good)
        .json(&json!({ "symbol": "SBZ", "side": "buy", "type": "limit", "price": "95.00", "qty": "1" }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);

    // WebSocket auth ops, good and bad.
    let ws_url = server.base.replace("http://", "ws://") + "/stream";
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("ws");
    for t in [&forged, &good] {
        ws.send(Message::Text(json!({ "op": "auth", "token": t }).to_string().into()))
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ws);

    // Signed requests: one good, one with a bad signature, one replayed.
    let mut signatures = Vec::new();
    let ts = (now * 1_000).to_string();
    let sig = hmac::sign(SVC_SECRET.as_bytes(), &ts, "GET", "/api/v1/orders", b"");
    let bad = hmac::sign(
        b"wrong-secret-0123456789abcdef-000000",
        &ts,
        "GET",
        "/api/v1/orders",
        b"",
    );
    for (s, want) in [
        (&sig, StatusCode::OK),
        (&bad, StatusCode::UNAUTHORIZED),
        (&sig, StatusCode::UNAUTHORIZED),
    ] {
        let r = http
            .get(format!("{}/orders", server.base))
            .header("x-service-identity", "algo-log")
            .header("x-internal-api-key", "algo-log-k1")
            .header("x-request-timestamp", &ts)
            .header("x-request-signature", s)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), want);
        signatures.push(s.clone());
    }
    drop(server);

    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        logs.contains("authentication failed"),
        "the failures were logged (so the search below means something)"
    );
    let payload = |t: &str| t.split('.').nth(1).map(str::to_owned).unwrap_or_default();
    let mut needles = vec![
        JWT_SECRET.to_owned(),
        SVC_SECRET.to_owned(),
        good.clone(),
        expired.clone(),
        forged.clone(),
        payload(&good),
        payload(&forged),
    ];
    needles.extend(signatures);
    for n in &needles {
        assert!(
            !logs.contains(n.as_str()),
            "a credential is in the logs: {}...",
            &n[..8]
        );
    }
    // Whatever logged a header map would show this.
    assert!(
        !logs.to_ascii_lowercase().contains("bearer "),
        "an Authorization header is in the logs"
    );
    let _ = std::fs::remove_dir_all(dir);
}

//! API security over real sockets: forged JWTs (alg none, wrong key, expired, wrong
//! audience, HS/RS confusion) against HS256, RS256 and EdDSA servers; HMAC-signed
//! service requests (clock skew both ways, replay, tampered body, unknown service,
//! disallowed operation); rate-limit exhaustion and recovery per tier, shared through
//! a real Redis by two nodes; CORS preflight allowed and denied; security headers; and
//! the audit log's hash chain over all of it.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::redis_server::RedisServer;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stocksblitz_api::app::RunningApp;
use stocksblitz_api::auth::hmac;
use stocksblitz_api::auth::{Role, Tier, Tokens};
use stocksblitz_api::config::auth::JwtAlgorithm;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn order(price: &str) -> Value {
    json!({ "symbol": "SBZ", "side": "buy", "type": "limit", "price": price, "qty": "1" })
}

async fn get_with(app: &RunningApp, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(http(app, path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("request")
}

async fn code_of(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

/// The audit log lines (after the writer has caught up).
async fn audit_lines(path: &Path, at_least: usize) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect();
        if lines.len() >= at_least {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit log never reached {at_least} lines");
}

/// The `auth.failure` lines once the failures they count reach `want` (aggregated
/// repeats are written when their interval ends).
async fn auth_failure_lines(path: &Path, want: u64) -> Vec<Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|l| l["action"] == "auth.failure")
            .collect();
        let counted: u64 = lines.iter().map(|l| l["details"]["count"].as_u64().unwrap_or(0)).sum();
        if counted >= want {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit log never counted {want} authentication failures");
}

/// The failures an `auth.failure` line counts, by code (a first line counts its own).
fn failure_codes(lines: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut codes = std::collections::BTreeMap::new();
    for l in lines {
        match l["details"]["codes"].as_object() {
            Some(m) => {
                for (c, n) in m {
                    *codes.entry(c.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
                }
            }
            None => *codes.entry(l["outcome"].as_str().unwrap_or("").to_owned()).or_insert(0) += 1,
        }
    }
    codes
}

/// A config with its audit log at a known path.
fn config_with_audit(audit: &Path, edit: impl FnOnce(&mut toml::Table)) -> String {
    let audit = audit.display().to_string();
    test_config(move |d| {
        d["audit"]["path"] = toml::Value::String(audit);
        // Aggregated repeats are written a second after their first.
        d["audit"]["auth_failure_interval_secs"] = toml::Value::Integer(1);
        edit(d);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_and_audited() {
    let dir = fresh_dir("sec-jwt");
    let audit = dir.join("audit.log");
    let app = start_with(&config_with_audit(&audit, |_| {})).await;
    let good = token("alice", "trader");
    let r = get_with(&app, "/api/v1/orders", Some(&format!("Bearer {good}"))).await;
    assert_eq!(r.status(), StatusCode::OK);

    let secret = test_secret();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = good.split('.').nth(1).expect("payload");
    let none = format!("{}.{payload}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
    let other_key = Tokens::new(&[9u8; 32], "stocksblitz", "stocksblitz-api", 30)
        .mint("alice", Role::Admin, Tier::Premium, now_secs(), 600)
        .expect("mint");
    let expired = Tokens::new(&secret, "stocksblitz", "stocksblitz-api", 30)
        .mint("alice", Role::Trader, Tier::Standard, now_secs() - 7_200, 600)
        .expect("mint");
    let wrong_aud = Tokens::new(&secret, "stocksblitz", "someone-else", 30)
        .mint("alice", Role::Trader, Tier::Standard, now_secs(), 600)
        .expect("mint");
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).expect("b64")).expect("json");
    claims["role"] = "admin".into();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    let forged = [none.as_str(), &other_key, &expired, &wrong_aud, &tampered, "not-a-jwt"];
    for t in forged {
        let (s, code) = code_of(get_with(&app, "/api/v1/orders", Some(&format!("Bearer {t}"))).await).await;
        assert_eq!((s, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{t}");
    }
    let (s, code) = code_of(get_with(&app, "/api/v1/orders", Some("Basic abc")).await).await;
    assert_eq!((s, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
    // No credentials at all on a private route.
    let (s, code) = code_of(get_with(&app, "/api/v1/orders", None).await).await;
    assert_eq!((s, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));

    // Every refusal is in the audit log, which names no token; the chain verifies.
    // From one address: the first as a line of its own, the repeats as one line with
    // their count.
    let failures = auth_failure_lines(&audit, forged.len() as u64 + 1).await;
    assert!(failures.len() >= 2, "{failures:?}");
    assert_eq!(failures[0]["details"]["count"], 1);
    assert_eq!(failures[0]["details"]["route"], "GET /api/v1/orders");
    assert!(failures[1]["details"]["repeats"] == true, "{failures:?}");
    assert!(failures.iter().all(|l| l["details"]["source"] == "ip:127.0.0.1"));
    assert_eq!(
        failure_codes(&failures).get("UNAUTHORIZED"),
        Some(&(forged.len() as u64 + 1))
    );
    let lines = audit_lines(&audit, failures.len()).await;
    let text = std::fs::read_to_string(&audit).expect("audit");
    for t in forged.iter().chain([&good.as_str()]) {
        if t.len() > 20 {
            assert!(!text.contains(*t), "a token leaked into the audit log");
        }
    }
    let v = stocksblitz_api::audit::chain::verify(&audit).expect("chain verifies");
    assert_eq!(v.entries as usize, lines.len());
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

/// An RSA or Ed25519 key pair made by openssl, as PEM files.
fn keypair(dir: &Path, name: &str, algorithm: &str) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::create_dir_all(dir).expect("dir");
    let mut gen = Command::new("openssl");
    gen.arg("genpkey").arg("-algorithm").arg(algorithm);
    if algorithm == "RSA" {
        gen.args(["-pkeyopt", "rsa_keygen_bits:2048"]);
    }
    let ok = gen
        .arg("-out")
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl genpkey");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl pkey -pubout");
    (
        std::fs::read(&public).expect("public"),
        std::fs::read(&private).expect("private"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_eddsa_servers_pin_their_algorithm() {
    let dir = fresh_dir("sec-keys");
    let (rsa_pub, rsa_priv) = keypair(&dir, "rsa", "RSA");
    let (ed_pub, ed_priv) = keypair(&dir, "ed", "ED25519");
    let setups = [
        (
            JwtAlgorithm::RS256,
            "RS256",
            "SBZ_TEST_RS_PUBLIC",
            "rsa.pub",
            &rsa_pub,
            &rsa_priv,
        ),
        (
            JwtAlgorithm::EdDSA,
            "EdDSA",
            "SBZ_TEST_ED_PUBLIC",
            "ed.pub",
            &ed_pub,
            &ed_priv,
        ),
    ];
    let mut signers = Vec::new();
    for (alg, _, _, _, public, private) in &setups {
        signers
            .push(Tokens::from_pem(*alg, public, Some(private), "stocksblitz", "stocksblitz-api", 30).expect("keys"));
    }
    for (i, (_, name, var, file, public, _)) in setups.iter().enumerate() {
        // The public key reaches the server as a file named by <VAR>_FILE.
        stocksblitz_testkit::env::set(format!("{var}_FILE"), dir.join(file));
        let app = start_with(&test_config(|d| {
            let a = d["auth"].as_table_mut().expect("auth");
            a.remove("secret_env");
            a.remove("dev_key_file");
            a.insert("algorithm".into(), toml::Value::String((*name).into()));
            a.insert("public_key_env".into(), toml::Value::String((*var).into()));
        }))
        .await;
        let me = &signers[i];
        let other = &signers[1 - i];
        let good = me
            .mint("alice", Role::Trader, Tier::Standard, now_secs(), 600)
            .expect("mint");
        let r = get_with(&app, "/api/v1/orders", Some(&format!("Bearer {good}"))).await;
        assert_eq!(r.status(), StatusCode::OK, "{name}: a token from the right key");
        // The other asymmetric algorithm, and HS256 keyed with this server's public
        // key (the classic key-confusion forgery), are both refused.
        let wrong_alg = other
            .mint("alice", Role::Trader, Tier::Standard, now_secs(), 600)
            .expect("mint");
        let confused = Tokens::new(public, "stocksblitz", "stocksblitz-api", 30)
            .mint("alice", Role::Admin, Tier::Premium, now_secs(), 600)
            .expect("mint");
        for t in [wrong_alg, confused] {
            let (s, code) = code_of(get_with(&app, "/api/v1/orders", Some(&format!("Bearer {t}"))).await).await;
            assert_eq!((s, code.as_str()), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{name}");
        }
        app.shutdown().await.expect("shutdown");
    }
    let _ = std::fs::remove_dir_all(dir);
}

const SVC_SECRET: &str = "svc-secret-for-tests-0123456789abcdef";

struct Signer {
    base: String,
    identity: String,
    key_id: String,
    secret: String,
}

impl Signer {
    fn headers(&self, method: &str, pq: &str, body: &[u8], ts: i64) -> Vec<(&'static str, String)> {
        let ts = ts.to_string();
        vec![
            ("x-service-identity", self.identity.clone()),
            ("x-internal-api-key", self.key_id.clone()),
            ("x-request-timestamp", ts.clone()),
            (
                "x-request-signature",
                hmac::sign(self.secret.as_bytes(), &ts, method, pq, body),
            ),
        ]
    }

    async fn send(
        &self,
        method: Method,
        pq: &str,
        body: &[u8],
        headers: &[(&'static str, String)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{pq}", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.expect("request");
        let (status, h) = (r.status(), r.headers().clone());
        (status, r.json().await.unwrap_or(Value::Null), h)
    }

    async fn signed(&self, method: Method, pq: &str, body: &[u8]) -> (StatusCode, Value) {
        let h = self.headers(method.as_str(), pq, body, now_ms());
        let (s, v, _) = self.send(method, pq, body, &h).await;
        (s, v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_service_requests() {
    let dir = fresh_dir("sec-hmac");
    let audit = dir.join("audit.log");
    stocksblitz_testkit::env::set("SBZ_TEST_SVC_ALGO_SECRET", SVC_SECRET);
    let app = start_with(&config_with_audit(&audit, |d| {
        add_service(d, "algo-1", "SBZ_TEST_SVC_ALGO_SECRET", "bob", &["read", "place"]);
    }))
    .await;
    let s = Signer {
        base: format!("http://{}", app.addr),
        identity: "algo-1".into(),
        key_id: "algo-1-k1".into(),
        secret: SVC_SECRET.into(),
    };
    let body = order("99.00").to_string().into_bytes();
    let h = s.headers("POST", "/api/v1/orders", &body, now_ms());
    let (st, v, headers) = s.send(Method::POST, "/api/v1/orders", &body, &h).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(headers.get("ratelimit").is_none(), "services are not rate limited");
    let order_id = v["order"]["order_id"]
        .as_str()
        .or(v["order_id"].as_str())
        .map(str::to_owned);
    // The order is bob's (the service's account).
    let bob = Client::new(&app, "bob", "viewer");
    let (_, orders) = bob.get("/orders").await;
    assert_eq!(orders["orders"].as_array().map(Vec::len), Some(1), "{orders}");

    // The same signed request again: a replay.
    let (st, v, _) = s.send(Method::POST, "/api/v1/orders", &body, &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("SIGNATURE_REPLAYED"))
    );
    // A tampered body under a fresh signature of the original.
    let h = s.headers("POST", "/api/v1/orders", &body, now_ms());
    let tampered = order("1.00").to_string().into_bytes();
    let (st, v, _) = s.send(Method::POST, "/api/v1/orders", &tampered, &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("BAD_SIGNATURE"))
    );
    // Clock skew past the 5 s window, both ways; inside it, fine.
    for (skew, code) in [
        (6_000, Some("TIMESTAMP_OUT_OF_WINDOW")),
        (-6_000, Some("TIMESTAMP_OUT_OF_WINDOW")),
    ] {
        let h = s.headers("GET", "/api/v1/orders", b"", now_ms() + skew);
        let (st, v, _) = s.send(Method::GET, "/api/v1/orders", b"", &h).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, code),
            "skew {skew}"
        );
    }
    let h = s.headers("GET", "/api/v1/orders?limit=5", b"", now_ms() - 3_000);
    let (st, v, _) = s.send(Method::GET, "/api/v1/orders?limit=5", b"", &h).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The query is signed too.
    let h = s.headers("GET", "/api/v1/orders?limit=5", b"", now_ms());
    let (st, v, _) = s.send(Method::GET, "/api/v1/orders?limit=6", b"", &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("BAD_SIGNATURE"))
    );
    // Unknown service or key, wrong secret.
    for (identity, key_id, secret) in [
        ("algo-2", "algo-1-k1", SVC_SECRET),
        ("algo-1", "nope", SVC_SECRET),
        ("algo-1", "algo-1-k1", "a-different-secret-0123456789abcdef"),
    ] {
        let other = Signer {
            base: s.base.clone(),
            identity: identity.into(),
            key_id: key_id.into(),
            secret: secret.into(),
        };
        let (st, v) = other.signed(Method::GET, "/api/v1/orders", b"").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
        let want = if secret == SVC_SECRET {
            "UNKNOWN_SERVICE"
        } else {
            "BAD_SIGNATURE"
        };
        assert_eq!(v["error"]["code"], want);
    }
    // Missing one header.
    let mut h = s.headers("GET", "/api/v1/orders", b"", now_ms());
    h.retain(|(k, _)| *k != "x-request-timestamp");
    let (st, v, _) = s.send(Method::GET, "/api/v1/orders", b"", &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("SIGNATURE_HEADERS_MISSING"))
    );
    // Operations outside its allow-list: cancel, mass cancel, administration.
    let cancel_path = format!("/api/v1/orders/{}", order_id.as_deref().unwrap_or("1"));
    for (m, p, body) in [
        (Method::DELETE, cancel_path.as_str(), Vec::new()),
        (Method::DELETE, "/api/v1/orders", Vec::new()),
        (
            Method::POST,
            "/api/v1/admin/kill-switch",
            br#"{"scope":"global","active":true}"#.to_vec(),
        ),
    ] {
        let (st, v) = s.signed(m.clone(), p, &body).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("OPERATION_NOT_ALLOWED")),
            "{m} {p}"
        );
    }
    let (_, orders) = bob.get("/orders").await;
    assert_eq!(orders["orders"][0]["status"], "open", "nothing was cancelled: {orders}");

    // Over the WebSocket: a signed upgrade authenticates the connection; the
    // allow-list holds for its order ops too.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/stream", app.addr)
        .into_client_request()
        .expect("request");
    for (k, v) in s.headers("GET", "/api/v1/stream", b"", now_ms()) {
        req.headers_mut().insert(k, v.parse().expect("header value"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("signed upgrade");
    send(&mut ws, json!({ "op": "order.new", "id": 1, "order": order("97.00") })).await;
    let ack = recv_until(&mut ws, Duration::from_secs(5), |v| v["id"] == 1)
        .await
        .expect("answer");
    assert_eq!(ack["type"], "order.ack", "{ack}");
    send(
        &mut ws,
        json!({ "op": "order.cancel", "id": 2, "order_id": order_id.as_deref().unwrap_or("1") }),
    )
    .await;
    let refused = recv_until(&mut ws, Duration::from_secs(5), |v| v["id"] == 2)
        .await
        .expect("answer");
    assert_eq!(refused["error"]["code"], "OPERATION_NOT_ALLOWED", "{refused}");
    drop(ws);

    // Audited: the placement (as the service), and each of the 12 refusals (the first
    // on its own line, the repeats counted by code in one more).
    let failures = auth_failure_lines(&audit, 12).await;
    let codes = failure_codes(&failures);
    assert_eq!(codes.values().sum::<u64>(), 12, "{codes:?}");
    for (code, n) in [
        ("SIGNATURE_REPLAYED", 1),
        ("BAD_SIGNATURE", 3),
        ("TIMESTAMP_OUT_OF_WINDOW", 2),
        ("UNKNOWN_SERVICE", 2),
        ("SIGNATURE_HEADERS_MISSING", 1),
        ("OPERATION_NOT_ALLOWED", 3),
    ] {
        assert_eq!(codes.get(code), Some(&n), "{code}: {codes:?}");
    }
    let lines = audit_lines(&audit, 4).await;
    assert!(lines
        .iter()
        .any(|l| l["action"] == "order.place" && l["actor"]["name"] == "algo-1" && l["outcome"] == "ok"));
    assert!(!std::fs::read_to_string(&audit).expect("audit").contains(SVC_SECRET));
    stocksblitz_api::audit::chain::verify(&audit).expect("chain verifies");
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

fn limits(anonymous: i64, authenticated: i64, premium: i64) -> impl FnOnce(&mut toml::Table) {
    move |d| {
        // The anonymous tier applies to market data from loopback too.
        d["rate_limits"]["loopback_public_per_min"] = toml::Value::Integer(0);
        d["rate_limits"]["anonymous_per_min"] = toml::Value::Integer(anonymous);
        d["rate_limits"]["authenticated_per_min"] = toml::Value::Integer(authenticated);
        d["rate_limits"]["premium_per_min"] = toml::Value::Integer(premium);
    }
}

/// Spends `n` requests; returns the last response's status and headers.
async fn spend(url: &str, auth: Option<&str>, n: usize) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    let mut last = None;
    for _ in 0..n {
        let mut req = client.get(url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("request");
        let (s, h) = (r.status(), r.headers().clone());
        last = Some((s, h, r.json().await.unwrap_or(Value::Null)));
    }
    last.expect("at least one request")
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `RateLimit: "tier";r=R;t=T` as (R, T).
fn remaining(h: &reqwest::header::HeaderMap) -> (u64, u64) {
    let v = header(h, "ratelimit");
    let field = |k: &str| {
        v.split(';')
            .find_map(|p| p.strip_prefix(k))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {v:?}"))
    };
    (field("r="), field("t="))
}

/// Requests until the first 429 (at most `max`): how many got through, and the 429.
async fn until_limited(url: &str, auth: Option<&str>, max: usize) -> (usize, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::new();
    for n in 0..max {
        let mut req = client.get(url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let h = r.headers().clone();
            return (n, h, r.json().await.unwrap_or(Value::Null));
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    panic!("never limited in {max} requests");
}

/// Upper bound on requests a bucket of `limit`/min lets through in `elapsed`.
fn most(limit: usize, elapsed: Duration) -> usize {
    limit + (elapsed.as_secs_f64() * limit as f64 / 60.0).ceil() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_tiers_exhaust_and_recover() {
    // 60/min anonymous: one request a second refills.
    let app = start_with(&test_config(limits(60, 120, 240))).await;
    let url = http(&app, "/api/v1/instruments");
    let (s, h, _) = spend(&url, None, 1).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit-policy"), "\"anonymous\";q=60;w=60");
    assert_eq!(remaining(&h), (59, 1));
    let started = std::time::Instant::now();
    let (n, h, body) = until_limited(&url, None, 200).await;
    assert!((59..=most(59, started.elapsed())).contains(&n), "{n} got through");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert!(body["error"]["request_id"].is_string());
    assert_eq!(header(&h, "retry-after"), "1");
    assert_eq!(remaining(&h).0, 0);
    // Failed authentication spends the address's budget too (no brute force).
    let (s, _, body) = spend(&url, Some("Bearer forged.token.here"), 1).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("RATE_LIMITED"))
    );
    // Health and metrics are never limited.
    let r = reqwest::get(http(&app, "/health")).await.expect("health");
    assert_eq!(r.status(), StatusCode::OK);
    // After Retry-After, one more request gets through.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, _, _) = spend(&url, None, 1).await;
    assert_eq!(s, StatusCode::OK, "recovered");

    // Token holders have buckets of their own, by tier.
    let alice = format!("Bearer {}", token("alice", "trader"));
    let started = std::time::Instant::now();
    let (n, h, _) = until_limited(&url, Some(&alice), 400).await;
    assert!((120..=most(120, started.elapsed())).contains(&n), "{n} got through");
    assert_eq!(header(&h, "ratelimit-policy"), "\"authenticated\";q=120;w=60");
    let premium = token_with("bob", Role::Trader, Tier::Premium, now_secs());
    let (s, h, _) = spend(&url, Some(&format!("Bearer {premium}")), 121).await;
    assert_eq!(s, StatusCode::OK, "premium goes past the standard limit");
    assert_eq!(header(&h, "ratelimit-policy"), "\"premium\";q=240;w=60");
    let (r, t) = remaining(&h);
    assert!((119..=240).contains(&r) && (1..=31).contains(&t), "r={r} t={t}");
    // Counted in /metrics, by tier and by error code.
    let metrics = metrics(&app).await;
    let value = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
    };
    assert!(value("stocksblitz_ratelimit_limited_total{tier=\"anonymous\"}") >= 2);
    assert!(value("stocksblitz_ratelimit_limited_total{tier=\"authenticated\"}") >= 1);
    assert!(value("stocksblitz_ratelimit_allowed_total{tier=\"premium\"}") >= 121);
    assert!(value("stocksblitz_http_errors_total{code=\"RATE_LIMITED\",status=\"429\"}") >= 3);
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_shared_through_redis() {
    let root = fresh_dir("sec-redis");
    let mut redis = RedisServer::start(&root);
    let url = redis.url();
    stocksblitz_testkit::env::set("SBZ_TEST_SVC_SHARED_SECRET", SVC_SECRET);
    let with = move |d: &mut toml::Table| {
        limits(1_000, 30, 1_000)(d);
        add_service(d, "algo-shared", "SBZ_TEST_SVC_SHARED_SECRET", "bob", &["read"]);
        d.insert("redis".into(), redis_section(&url));
    };
    let a = start_with(&test_config(with.clone())).await;
    let b = start_with(&test_config(with)).await;
    let ops = format!("Bearer {}", token("ops", "viewer"));
    let started = std::time::Instant::now();
    let (s, _, _) = spend(&http(&a, "/api/v1/instruments"), Some(&ops), 20).await;
    assert_eq!(s, StatusCode::OK);
    let (n, _, _) = until_limited(&http(&b, "/api/v1/instruments"), Some(&ops), 100).await;
    assert!(
        (10..=most(10, started.elapsed())).contains(&n),
        "node b let {n} through after node a's 20"
    );
    let (s, _, _) = spend(&http(&a, "/api/v1/instruments"), Some(&ops), 1).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "one bucket across both nodes");
    // The bucket is a Redis key with an expiry.
    let ttl: i64 = a
        .state
        .redis
        .as_ref()
        .expect("redis")
        .query(redis::cmd("PTTL").arg("rl:acct:ops").to_owned())
        .await
        .expect("pttl");
    assert!((1..=61_000).contains(&ttl), "pttl {ttl}");
    // A signature accepted by node a is a replay on node b (nonces live in Redis).
    let signer = |app: &RunningApp| Signer {
        base: format!("http://{}", app.addr),
        identity: "algo-shared".into(),
        key_id: "algo-shared-k1".into(),
        secret: SVC_SECRET.into(),
    };
    let h = signer(&a).headers("GET", "/api/v1/positions", b"", now_ms());
    let (st, v, _) = signer(&a).send(Method::GET, "/api/v1/positions", b"", &h).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v, _) = signer(&b).send(Method::GET, "/api/v1/positions", b"", &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("SIGNATURE_REPLAYED"))
    );

    // Redis down: signed requests are refused (retryably) rather than unprotected
    // against replay; token holders are still limited, by this node's buckets.
    redis.stop();
    let h = signer(&a).headers("GET", "/api/v1/positions", b"", now_ms());
    let (st, v, _) = signer(&a).send(Method::GET, "/api/v1/positions", b"", &h).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("REPLAY_STORE_UNAVAILABLE"))
    );
    let bob = format!("Bearer {}", token("bob", "viewer"));
    let (n, h, _) = until_limited(&http(&a, "/api/v1/instruments"), Some(&bob), 100).await;
    assert!((30..=40).contains(&n), "{n}");
    assert!(header(&h, "ratelimit").starts_with("\"authenticated\""));
    assert!(
        a.state
            .access
            .limiter
            .stats
            .redis_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 30
    );
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
    drop(redis);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allow_list_and_security_headers() {
    let app = start_with(&test_config(|d| {
        d["api"]["cors_allowed_origins"] =
            toml::Value::Array(vec![toml::Value::String("https://desk.example.com".into())]);
    }))
    .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(Method::OPTIONS, http(&app, "/api/v1/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let ok = preflight("https://desk.example.com").await.expect("preflight");
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        header(ok.headers(), "access-control-allow-origin"),
        "https://desk.example.com"
    );
    assert!(header(ok.headers(), "access-control-allow-methods").contains("POST"));
    assert!(header(ok.headers(), "access-control-allow-headers").contains("idempotency-key"));
    let denied = preflight("https://evil.example.net").await.expect("preflight");
    assert!(
        denied.headers().get("access-control-allow-origin").is_none(),
        "no CORS headers for others"
    );
    // A simple GET from an allowed origin exposes our headers; from another, nothing.
    let r = client
        .get(http(&app, "/api/v1/instruments"))
        .header("origin", "https://desk.example.com")
        .send()
        .await
        .expect("get");
    assert_eq!(
        header(r.headers(), "access-control-allow-origin"),
        "https://desk.example.com"
    );
    assert!(header(r.headers(), "access-control-expose-headers").contains("x-request-id"));
    let r = client
        .get(http(&app, "/api/v1/instruments"))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .expect("get");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Security headers everywhere, no-store on the API, no HSTS without TLS.
    for path in ["/api/v1/instruments", "/health", "/api/v1/nope"] {
        let r = client.get(http(&app, path)).send().await.expect("get");
        let h = r.headers();
        assert_eq!(header(h, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(h, "x-frame-options"), "DENY", "{path}");
        assert!(
            header(h, "content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(h.get("strict-transport-security").is_none(), "{path}");
    }
    let r = client.get(http(&app, "/api/v1/instruments")).send().await.expect("get");
    assert_eq!(header(r.headers(), "cache-control"), "no-store");
    app.shutdown().await.expect("shutdown");

    let app = start_with(&test_config(|d| {
        d["api"]["hsts"] = toml::Value::Boolean(true);
    }))
    .await;
    let r = client.get(http(&app, "/health")).send().await.expect("get");
    assert!(header(r.headers(), "strict-transport-security").starts_with("max-age="));
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_and_admin_actions_are_audited_and_tampering_is_caught() {
    let dir = fresh_dir("sec-audit");
    let audit = dir.join("audit.log");
    let app = start_with(&config_with_audit(&audit, |_| {})).await;
    let alice = Client::new(&app, "alice", "trader");
    let ops = Client::new(&app, "ops", "admin");
    let (s, placed) = alice.post("/orders", order("98.00")).await;
    assert_eq!(s, StatusCode::CREATED, "{placed}");
    let (s, _) = alice.post("/orders", json!({ "symbol": "NOPE" })).await;
    assert!(s.is_client_error());
    let (s, _) = alice.call(Method::DELETE, "/orders", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = ops
        .post(
            "/admin/kill-switch",
            json!({ "scope": "account", "account": "bob", "active": true }),
        )
        .await;
    assert!(s.is_success() || s.is_client_error(), "{v}");
    let lines = audit_lines(&audit, 4).await;
    let actions: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap_or(""),
                l["actor"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("order.place", "alice"),
            ("order.place", "alice"),
            ("order.mass_cancel", "alice"),
            ("admin.kill_switch", "ops")
        ]
    );
    assert_eq!(lines[0]["outcome"], "ok");
    assert_ne!(lines[1]["outcome"], "ok");
    assert!(lines
        .iter()
        .all(|l| l["request_id"].as_str().is_some_and(|r| r.starts_with("req-"))));
    app.shutdown().await.expect("shutdown");

    // A restart continues the chain.
    let app = start_with(&config_with_audit(&audit, |_| {})).await;
    let (s, _) = Client::new(&app, "alice", "trader")
        .post("/orders", order("97.00"))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let lines = audit_lines(&audit, 5).await;
    assert_eq!(lines[4]["seq"], 5);
    app.shutdown().await.expect("shutdown");
    let bin = env!("CARGO_BIN_EXE_stocksblitz");
    let out = Command::new(bin)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["entries"], 5);

    // Edit one line: verify names it.
    let text = std::fs::read_to_string(&audit).expect("audit");
    std::fs::write(&audit, text.replacen("\"alice\"", "\"mallory\"", 1)).expect("write");
    let out = Command::new(bin)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("edited"), "{err}");
    // Remove a line: the chain breaks there.
    let lines: Vec<&str> = text.lines().collect();
    let without = [&lines[..2], &lines[3..]].concat().join("\n") + "\n";
    std::fs::write(&audit, without).expect("write");
    let err = stocksblitz_api::audit::chain::verify(&audit).expect_err("broken");
    assert_eq!(err.line, 3, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip).build().expect("client")
}

/// Reads until the server closes the socket; its close code (None: no close frame).
async fn close_code(ws: &mut Ws, wait: Duration) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Close(frame) = msg {
            return frame.map(|f| u16::from(f.code));
        }
    }
    None
}

/// Sends `msg(i)` for i in 0..max, reading the answer to each, until the server closes
/// the socket: the answers, and the close code (None: not closed).
async fn until_closed(ws: &mut Ws, max: usize, msg: impl Fn(usize) -> Value) -> (Vec<Value>, Option<u16>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut answers = Vec::new();
    for i in 0..max {
        if ws.send(Message::Text(msg(i).to_string().into())).await.is_err() {
            break;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if v["type"] != "heartbeat" {
                        answers.push(v);
                        break;
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => return (answers, frame.map(|f| u16::from(f.code))),
                Ok(Some(Ok(_))) => {}
                _ => return (answers, None),
            }
        }
    }
    let code = close_code(ws, Duration::from_secs(10)).await;
    (answers, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_from_22_addresses_and_4_sockets_are_limited_and_aggregated() {
    let dir = fresh_dir("sec-authflood");
    let audit = dir.join("audit.log");
    let app = start_with(&config_with_audit(&audit, |d| {
        d["rate_limits"]["auth_failures_per_min"] = toml::Value::Integer(5);
        d["rate_limits"]["ws_auth_failures_per_connection"] = toml::Value::Integer(3);
        // One window for the whole test, closed explicitly below.
        d["audit"]["auth_failure_interval_secs"] = toml::Value::Integer(3_600);
    }))
    .await;
    // Four sockets from 127.0.0.1, each sending 50 bad `auth` messages: each is closed
    // with 4429 after 3 failures; the address's first 5 failures are checked and
    // audited, the rest refused unchecked.
    let mut ws_refused = 0;
    let mut ws_checked = 0;
    for _ in 0..4 {
        let mut ws = ws_connect(&app).await;
        let (answers, code) = until_closed(&mut ws, 50, |i| json!({ "op": "auth", "token": "x", "id": i })).await;
        assert_eq!((answers.len(), code), (3, Some(4429)), "{answers:?}");
        for v in answers {
            match v["error"]["code"].as_str() {
                Some("UNAUTHORIZED") => ws_checked += 1,
                Some("RATE_LIMITED") => ws_refused += 1,
                other => panic!("{other:?}: {v}"),
            }
        }
    }
    assert_eq!((ws_checked, ws_refused), (5, 7), "4 sockets x 3 answers");

    // Twenty more addresses, 20 bad tokens each over HTTP: 5 checked, 15 refused (429)
    // without being checked, whatever the token.
    let bad = format!("Bearer {}", "x".repeat(40));
    for a in 2..=21u8 {
        let client = client_from(std::net::IpAddr::from([127, 0, 0, a]));
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let r = client
                .get(http(&app, "/api/v1/orders"))
                .header("authorization", &bad)
                .send()
                .await
                .expect("request");
            let status = r.status();
            let retry = r.headers().contains_key("retry-after");
            let v: Value = r.json().await.expect("json");
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert!(retry && v["error"]["details"]["tier"] == "auth_failures", "{v}");
            }
            statuses.push(status);
        }
        let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
        assert_eq!(refused, 15, "127.0.0.{a}: {statuses:?}");
        // A valid token from that address is refused too until it refills; public data
        // without credentials is not.
        let r = client
            .get(http(&app, "/api/v1/orders"))
            .bearer_auth(token("alice", "viewer"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let r = client
            .get(http(&app, "/api/v1/instruments"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Anonymous order entry (no credentials at all) from one more address, 30 times:
    // refused, and aggregated like the failures rather than a line each.
    let anonymous = client_from(std::net::IpAddr::from([127, 0, 0, 30]));
    for _ in 0..30 {
        let r = anonymous
            .post(http(&app, "/api/v1/orders"))
            .json(&order("99.00"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The audit log: 22 addresses (21 x 5 checked failures, 30 anonymous orders), in 2
    // lines per address (the first at once, the rest when the window closes).
    let checked = 21 * 5 + 30;
    let firsts = auth_failure_lines(&audit, 22).await;
    assert_eq!(firsts.len(), 22, "one line per address so far");
    app.state.access.audit.flush_failures();
    let lines = auth_failure_lines(&audit, checked).await;
    assert_eq!(lines.len(), 2 * 22, "{} lines", lines.len());
    let all = audit_lines(&audit, 2 * 22).await;
    assert_eq!(all.len(), 2 * 22, "nothing else was written for anonymous callers");
    let counted: u64 = lines.iter().map(|l| l["details"]["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, checked);
    let refused: u64 = lines
        .iter()
        .map(|l| l["details"]["refused_unchecked"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refused, 7 + 20 * 16, "refusals are counted in the aggregated lines");
    let sources: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["details"]["source"].as_str()).collect();
    assert_eq!(sources.len(), 22, "{sources:?}");
    stocksblitz_api::audit::chain::verify(&audit).expect("chain verifies");
    let m = metrics(&app).await;
    assert_eq!(sample(&m, "stocksblitz_audit_auth_failures_total "), Some(checked));
    assert_eq!(
        sample(&m, "stocksblitz_ratelimit_auth_failures_limited_total "),
        Some(7 + 20 * 16)
    );
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_past_the_tracked_sources_share_one_line() {
    let dir = fresh_dir("sec-authsources");
    let audit = dir.join("audit.log");
    let app = start_with(&config_with_audit(&audit, |d| {
        d["audit"]["auth_failure_sources"] = toml::Value::Integer(3);
        d["audit"]["auth_failure_interval_secs"] = toml::Value::Integer(3_600);
    }))
    .await;
    // 40 addresses, 3 bad tokens each: 3 tracked addresses, the 37 others share a line.
    let bad = format!("Bearer {}", "y".repeat(40));
    for a in 1..=40u8 {
        let client = client_from(std::net::IpAddr::from([127, 0, 1, a]));
        for _ in 0..3 {
            let r = client
                .get(http(&app, "/api/v1/positions"))
                .header("authorization", &bad)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
    }
    app.state.access.audit.flush_failures();
    let lines = auth_failure_lines(&audit, 120).await;
    assert_eq!(lines.len(), 2 * (3 + 1), "{} lines for 120 failures", lines.len());
    let other: u64 = lines
        .iter()
        .filter(|l| l["details"]["source"] == "other")
        .map(|l| l["details"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(other, 37 * 3);
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_audited_actions_and_health_and_metrics_say_why() {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let app = start_with(&test_config(|d| {
        d["audit"]["path"] = toml::Value::String("/dev/full".into());
    }))
    .await;
    let alice = Client::new(&app, "alice", "trader");
    // The first action was admitted before the write failed; from then on, 503s.
    let _ = alice.post("/orders", order("98.00")).await;
    let mut refused = None;
    for _ in 0..100 {
        let (s, v) = alice.post("/orders", order("97.00")).await;
        if s == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = refused.expect("audited actions are refused once the log cannot be written");
    assert_eq!(v["error"]["code"], "AUDIT_UNAVAILABLE");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("No space left on device"), "{msg}");
    // Health says why, with the write error; metrics too.
    let r = reqwest::get(http(&app, "/health")).await.expect("health");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let h: Value = r.json().await.expect("json");
    assert_eq!(h["audit"]["status"], "failed", "{h}");
    assert!(
        h["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("No space left")))),
        "{h}"
    );
    let r = reqwest::get(http(&app, "/health/ready")).await.expect("ready");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let m = metrics(&app).await;
    assert_eq!(sample(&m, "stocksblitz_audit_failed "), Some(1));
    assert!(sample(&m, "stocksblitz_audit_write_errors_total ").is_some_and(|n| n >= 1));
    assert!(sample(&m, "stocksblitz_audit_refused_total ").is_some_and(|n| n >= 1));
    // Reads go on.
    let r = reqwest::get(http(&app, "/api/v1/quotes/BTCUSDT")).await.expect("quote");
    assert_eq!(r.status(), StatusCode::OK);
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_rate_limit_table_1200_addresses_then_1100_accounts_never_locks_out_accounts() {
    // Authenticated 1/min: one request keeps an account's bucket live for a minute.
    let app = start_with(&test_config(|d| {
        limits(10, 1, 1_000)(d);
        d["rate_limits"]["max_keys"] = toml::Value::Integer(1_000);
    }))
    .await;
    let url = http(&app, "/api/v1/instruments");
    let alice = format!("Bearer {}", token("alice", "trader"));
    let (s, _, _) = spend(&url, Some(&alice), 1).await;
    assert_eq!(s, StatusCode::OK);
    // 1,200 addresses, one request each: the table overflows; newcomers sweep idle
    // buckets and evict the least-used addresses, never alice's live bucket.
    for i in 0..1_200u32 {
        let ip = std::net::IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]);
        let r = client_from(ip).get(&url).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "address {ip}");
    }
    let premium = format!("Bearer {}", token_with("bob", Role::Trader, Tier::Premium, now_secs()));
    let (s, _, _) = spend(&url, Some(&premium), 1).await;
    assert_eq!(s, StatusCode::OK, "a premium newcomer gets in");
    // Alice's bucket survived the flood (the flood takes well under its minute): still
    // empty, so still refused. An evicted bucket would have let her through.
    let (s, _, _) = spend(&url, Some(&alice), 1).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "alice's bucket was kept");

    // Now 1,100 accounts, one request each, fill the table with live account buckets:
    // anonymous newcomers are refused (they never push out accounts); an account
    // newcomer still gets in, evicting only the least-used account.
    let secret = test_secret();
    let minter = Tokens::new(&secret, "stocksblitz", "stocksblitz-api", 30);
    let mint = |name: &str| {
        let t = minter
            .mint(name, Role::Viewer, Tier::Standard, now_secs(), 600)
            .expect("mint");
        format!("Bearer {t}")
    };
    for i in 0..1_100u32 {
        let (s, _, _) = spend(&url, Some(&mint(&format!("acct-{i}"))), 1).await;
        assert_eq!(s, StatusCode::OK, "account {i}");
    }
    let mut anonymous_refused = 0;
    for i in 0..50u8 {
        let r = client_from(std::net::IpAddr::from([127, 2, 0, i + 1]))
            .get(&url)
            .send()
            .await
            .expect("request");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            anonymous_refused += 1;
        }
    }
    assert_eq!(
        anonymous_refused, 50,
        "a table full of live accounts admits no new address"
    );
    let (s, _, _) = spend(&url, Some(&mint("acct-late")), 1).await;
    assert_eq!(s, StatusCode::OK, "an account newcomer gets in");
    // The most recent accounts kept their (spent) buckets through all of it.
    for i in 1_095..1_100u32 {
        let (s, _, _) = spend(&url, Some(&mint(&format!("acct-{i}"))), 1).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "acct-{i}'s bucket was kept");
    }
    let (anon, accounts) = app.state.access.limiter.local_keys();
    assert!(anon + accounts <= 1_000, "{anon} + {accounts}");
    app.shutdown().await.expect("shutdown");
}

/// A token with any claims, signed with the test server's key.
fn raw_token(claims: &Value) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&test_secret()),
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_nbf_iat_and_lifetime_over_a_grid_of_60_tokens() {
    const LEEWAY: i64 = 30;
    const MAX: i64 = 3_600;
    let app = start_with(&test_config(|d| {
        d["auth"]["max_token_lifetime_secs"] = toml::Value::Integer(MAX);
    }))
    .await;
    let n = now_secs() as i64;
    // Offsets chosen well away from every boundary (the clock moves while this runs).
    let nbfs = [None, Some(-600), Some(10), Some(120), Some(86_400)];
    let lifetimes = [60, 3_000, 3_700, 100 * 365 * 86_400];
    let iats = [0, -1_800, 7_200];
    let mut tried = 0;
    for nbf in nbfs {
        for life in lifetimes {
            for iat_off in iats {
                let iat = n + iat_off;
                let exp = iat + life;
                let mut claims = json!({
                    "sub": "alice", "role": "viewer", "iss": "stocksblitz", "aud": "stocksblitz-api",
                    "iat": iat, "exp": exp,
                });
                if let Some(o) = nbf {
                    claims["nbf"] = json!(n + o);
                }
                let want = if exp < n - LEEWAY {
                    Some("expired")
                } else if nbf.is_some_and(|o| o > LEEWAY) {
                    Some("not valid yet")
                } else if iat > n + LEEWAY {
                    Some("issued in the future")
                } else if life > MAX || exp - n > MAX + LEEWAY {
                    Some("lifetime too long")
                } else {
                    None
                };
                let r = get_with(
                    &app,
                    "/api/v1/positions",
                    Some(&format!("Bearer {}", raw_token(&claims))),
                )
                .await;
                let status = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let case = format!("nbf {nbf:?} life {life} iat {iat_off}: {v}");
                match want {
                    None => assert_eq!(status, StatusCode::OK, "{case}"),
                    Some(why) => {
                        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
                        let msg = v["error"]["message"].as_str().unwrap_or("");
                        assert!(msg.contains(why), "{case}");
                    }
                }
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 60);
    app.shutdown().await.expect("shutdown");

    // The CLI cannot mint past the bound either.
    let dir = fresh_dir("sec-cli");
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        test_config(|d| d["auth"]["max_token_lifetime_secs"] = toml::Value::Integer(MAX)),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_stocksblitz");
    for (ttl, ok) in [(MAX, true), (MAX + 1, false), (30 * 86_400, false)] {
        let out = Command::new(bin)
            .args(["token", "--account", "alice", "--role", "trader", "--ttl-secs"])
            .arg(ttl.to_string())
            .arg("--config")
            .arg(&cfg)
            .env_remove("SBZ_JWT_SECRET")
            .output()
            .expect("runs");
        assert_eq!(
            out.status.success(),
            ok,
            "ttl {ttl}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !ok {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("max_token_lifetime_secs"), "{err}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The embedded default's `[rate_limits]` (seed tiers, the development loopback tier).
fn default_limits(d: &mut toml::Table) {
    let doc: toml::Table = toml::from_str(stocksblitz_api::config::DEFAULT_TOML).expect("default parses");
    d.insert("rate_limits".into(), doc["rate_limits"].clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_user_refreshes_300_times_on_loopback_and_every_stderr_line_is_json() {
    let dir = fresh_dir("sec-readme");
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, test_config(default_limits)).expect("config");
    let log = dir.join("server.log");
    let server = common::process::spawn_server(&cfg, &log, &[]).await;
    let client = reqwest::Client::new();
    // A person following README: refreshing a quote and the API document, by hand and
    // then some; never a 429 in development on loopback.
    for i in 0..300 {
        let path = if i % 2 == 0 { "/quotes/BTCUSDT" } else { "/openapi.json" };
        let r = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "request {i} {path}");
        assert_eq!(
            header(r.headers(), "ratelimit-policy"),
            "\"loopback_public\";q=6000;w=60"
        );
    }
    // Everything else keeps seed 000's anonymous tier (10/min).
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let r = client
            .get(format!("{}/orders", server.base))
            .send()
            .await
            .expect("request");
        assert!(header(r.headers(), "ratelimit-policy").starts_with("\"anonymous\";q=10"));
        statuses.push(r.status());
    }
    assert_eq!(statuses[..10], [StatusCode::UNAUTHORIZED; 10]);
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    drop(server);
    // Every line the server wrote is a JSON object, the start-up banner included.
    let text = std::fs::read_to_string(&log).expect("log");
    let mut banner = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        banner |= v["message"].as_str().is_some_and(|m| m.contains("serving on"));
    }
    assert!(banner, "the banner is a JSON line:\n{text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_keeps_seed_tiers_the_11th_anonymous_quote_is_429() {
    let dir = fresh_dir("sec-prod");
    let (public, _) = keypair(&dir, "prod", "ED25519");
    assert!(!public.is_empty());
    stocksblitz_testkit::env::set("SBZ_TEST_PROD_PUBLIC_FILE", dir.join("prod.pub"));
    let app = start_with(&test_config(|d| {
        default_limits(d);
        d["api"]["environment"] = toml::Value::String("production".into());
        let a = d["auth"].as_table_mut().expect("auth");
        a.remove("secret_env");
        a.remove("dev_key_file");
        a.insert("algorithm".into(), toml::Value::String("EdDSA".into()));
        a.insert(
            "public_key_env".into(),
            toml::Value::String("SBZ_TEST_PROD_PUBLIC".into()),
        );
    }))
    .await;
    let url = http(&app, "/api/v1/quotes/BTCUSDT");
    let (n, h, body) = until_limited(&url, None, 50).await;
    assert_eq!(n, 10, "seed 000: anonymous 10/min");
    assert_eq!(header(&h, "ratelimit-policy"), "\"anonymous\";q=10;w=60");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

/// A WebSocket that authenticated with `token` (an `auth` message); the answer.
async fn ws_auth(app: &RunningApp, token: &str) -> (Ws, Value) {
    let mut ws = ws_connect(app).await;
    send(&mut ws, json!({ "op": "auth", "token": token, "id": "auth" })).await;
    let v = recv_until(&mut ws, Duration::from_secs(10), |v| v["id"] == "auth")
        .await
        .expect("an answer to auth");
    (ws, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_order_new_20_idempotency_keys_sent_3_times_place_20_orders() {
    let app = start_with(&test_config(|d| {
        d["orders"]["default_limits"]["orders_per_sec"] = toml::Value::Integer(1_000);
    }))
    .await;
    let (mut ws, ok) = ws_auth(&app, &token("alice", "trader")).await;
    assert_eq!(ok["type"], "authenticated", "{ok}");
    let body = |k: u32| order(&format!("{}.00", 80 + k));
    // Three rounds of the same 20 keyed orders: one order per key, the same answer.
    let mut answers: Vec<Vec<Value>> = vec![Vec::new(); 20];
    for round in 0..3 {
        for k in 0..20u32 {
            let id = format!("r{round}-k{k}");
            send(
                &mut ws,
                json!({ "op": "order.new", "id": id, "idempotency_key": format!("key-{k}"), "order": body(k) }),
            )
            .await;
        }
        // Answers come as each order's task finishes, in any order.
        let mut got = std::collections::BTreeMap::new();
        while got.len() < 20 {
            let v = recv(&mut ws, Duration::from_secs(10)).await.expect("an answer");
            if let Some(id) = v["id"].as_str().and_then(|i| i.strip_prefix(&format!("r{round}-k"))) {
                got.insert(id.parse::<usize>().expect("k"), v);
            }
        }
        for (k, v) in got {
            answers[k].push(v);
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for (k, a) in answers.iter().enumerate() {
        assert_eq!(a[0]["type"], "order.ack", "key {k}: {}", a[0]);
        let id = a[0]["data"]["order"]["order_id"].clone();
        for v in &a[1..] {
            assert_eq!(v["data"]["order"]["order_id"], id, "key {k}: {v}");
        }
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 20);
    let alice = Client::new(&app, "alice", "trader");
    let (_, listed) = alice.get("/orders?status=open&limit=100").await;
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(20), "{listed}");
    // The same key with another order, over the socket or REST (keys are per account,
    // shared by both): refused, nothing placed.
    send(
        &mut ws,
        json!({ "op": "order.new", "id": "reuse", "idempotency_key": "key-0", "order": body(7) }),
    )
    .await;
    let v = recv_until(&mut ws, Duration::from_secs(10), |v| v["id"] == "reuse")
        .await
        .expect("answer");
    assert_eq!(v["error"]["code"], "IDEMPOTENCY_KEY_REUSED", "{v}");
    let (s, v) = alice.post_keyed(Some("key-1"), &body(9)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    for bad in [String::new(), "k".repeat(200)] {
        send(
            &mut ws,
            json!({ "op": "order.new", "id": "bad", "idempotency_key": bad, "order": body(1) }),
        )
        .await;
        let v = recv_until(&mut ws, Duration::from_secs(10), |v| v["id"] == "bad")
            .await
            .expect("answer");
        assert_eq!(v["error"]["code"], "INVALID_PARAMETER", "{v}");
    }
    let (_, listed) = alice.get("/orders?status=open&limit=100").await;
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(20), "{listed}");
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_session_closes_4401_when_its_token_expires_and_a_fresh_token_extends_it() {
    let app = start_with(&test_config(|d| {
        d["auth"]["leeway_secs"] = toml::Value::Integer(0);
        d["api"]["ws_heartbeat_secs"] = toml::Value::Integer(1);
    }))
    .await;
    let secret = test_secret();
    let minter = Tokens::new(&secret, "stocksblitz", "stocksblitz-api", 0);
    // Issued an hour ago with an hour's life plus 3 s.
    let short = |account: &str| {
        minter
            .mint(account, Role::Trader, Tier::Standard, now_secs() - 3_600, 3_603)
            .expect("mint")
    };
    // By `auth` message, and by the upgrade's Authorization header.
    let (mut a, ok) = ws_auth(&app, &short("alice")).await;
    assert_eq!(ok["type"], "authenticated", "{ok}");
    assert!(ok["expires_at"].is_u64());
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/stream", app.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", short("bob")).parse().expect("header"),
    );
    let (mut b, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    // A third sends a fresh token for the same account before expiry: it stays open.
    let (mut c, _) = ws_auth(&app, &short("alice")).await;
    send(
        &mut c,
        json!({ "op": "auth", "token": token("alice", "trader"), "id": "again" }),
    )
    .await;
    let v = recv_until(&mut c, Duration::from_secs(10), |v| v["id"] == "again")
        .await
        .expect("answer");
    assert_eq!(v["type"], "authenticated", "{v}");
    send(
        &mut c,
        json!({ "op": "auth", "token": token("bob", "trader"), "id": "other" }),
    )
    .await;
    let v = recv_until(&mut c, Duration::from_secs(10), |v| v["id"] == "other")
        .await
        .expect("answer");
    assert_eq!(v["error"]["code"], "ALREADY_AUTHENTICATED", "{v}");

    assert_eq!(close_code(&mut a, Duration::from_secs(30)).await, Some(4401));
    assert_eq!(close_code(&mut b, Duration::from_secs(30)).await, Some(4401));
    send(&mut c, json!({ "op": "ping", "id": "still" })).await;
    let v = recv_until(&mut c, Duration::from_secs(10), |v| v["id"] == "still")
        .await
        .expect("the refreshed connection is open");
    assert_eq!(v["type"], "pong");
    app.shutdown().await.expect("shutdown");
}

/// Sends `n` pings on `ws`; how many were answered with pong (the rest must be
/// RATE_LIMITED).
async fn pings(ws: &mut Ws, n: usize) -> usize {
    for i in 0..n {
        send(ws, json!({ "op": "ping", "id": i })).await;
    }
    let mut pongs = 0;
    for _ in 0..n {
        let v = recv(ws, Duration::from_secs(10)).await.expect("an answer");
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            _ => assert_eq!(v["error"]["code"], "RATE_LIMITED", "{v}"),
        }
    }
    pongs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_messages_are_limited_by_the_callers_tier_30_to_100_pings_per_connection() {
    stocksblitz_testkit::env::set("SBZ_TEST_SVC_WSLIMIT_SECRET", SVC_SECRET);
    let app = start_with(&test_config(|d| {
        limits(10, 20, 40)(d);
        add_service(d, "algo-ws", "SBZ_TEST_SVC_WSLIMIT_SECRET", "bob", &["read"]);
    }))
    .await;
    // A signed service's connection is not limited.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let signer = Signer {
        base: format!("http://{}", app.addr),
        identity: "algo-ws".into(),
        key_id: "algo-ws-k1".into(),
        secret: SVC_SECRET.into(),
    };
    let mut req = format!("ws://{}/api/v1/stream", app.addr)
        .into_client_request()
        .expect("request");
    for (k, v) in signer.headers("GET", "/api/v1/stream", b"", now_ms()) {
        req.headers_mut().insert(k, v.parse().expect("header value"));
    }
    let (mut svc, _) = tokio_tungstenite::connect_async(req).await.expect("signed upgrade");
    assert_eq!(pings(&mut svc, 100).await, 100, "signed services are unlimited");
    let started = std::time::Instant::now();
    let mut anon = ws_connect(&app).await;
    let n = pings(&mut anon, 30).await;
    assert!((10..=most(10, started.elapsed())).contains(&n), "anonymous: {n}");
    // Authenticating moves the connection to the token's tier, with a bucket of its own.
    let (mut alice, ok) = ws_auth(&app, &token("alice", "trader")).await;
    assert_eq!(ok["type"], "authenticated");
    let started = std::time::Instant::now();
    let n = pings(&mut alice, 30).await;
    assert!((20..=most(20, started.elapsed())).contains(&n), "authenticated: {n}");
    let premium = token_with("bob", Role::Trader, Tier::Premium, now_secs());
    let (mut bob, _) = ws_auth(&app, &premium).await;
    let started = std::time::Instant::now();
    let n = pings(&mut bob, 60).await;
    assert!((40..=most(40, started.elapsed())).contains(&n), "premium: {n}");
    // Messages that are not even valid JSON count too.
    let mut garbage = ws_connect(&app).await;
    for i in 0..30 {
        send(&mut garbage, json!(format!("not a request {i}"))).await;
    }
    let mut bad = 0;
    for _ in 0..30 {
        let v = recv(&mut garbage, Duration::from_secs(10)).await.expect("an answer");
        match v["error"]["code"].as_str() {
            Some("BAD_MESSAGE") => bad += 1,
            code => assert_eq!(code, Some("RATE_LIMITED"), "{v}"),
        }
    }
    assert!(
        (10..=most(10, started.elapsed())).contains(&bad),
        "{bad} of 30 garbage messages answered"
    );
    // A client that keeps sending past its limit is closed.
    let mut flood = ws_connect(&app).await;
    let (answers, code) = until_closed(&mut flood, 200, |i| json!({ "op": "ping", "id": i })).await;
    assert_eq!(code, Some(4429));
    let refused = answers.iter().filter(|v| v["error"]["code"] == "RATE_LIMITED").count();
    assert!(
        (50..=answers.len()).contains(&refused) && answers.len() < 200,
        "{} answers",
        answers.len()
    );
    assert!(answers[answers.len() - 50..]
        .iter()
        .all(|v| v["error"]["code"] == "RATE_LIMITED"));
    app.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_auth_flood_of_2000_attempts_over_4_reconnecting_sockets_adds_2_audit_lines() {
    let dir = fresh_dir("sec-wsflood");
    let audit = dir.join("audit.log");
    let app = start_with(&config_with_audit(&audit, |d| {
        d["rate_limits"]["auth_failures_per_min"] = toml::Value::Integer(10);
        d["audit"]["auth_failure_interval_secs"] = toml::Value::Integer(3_600);
    }))
    .await;
    // The issue's attack: 4 connections sending {"op":"auth","token":"x"} as fast as
    // they can, reconnecting whenever they are closed, 500 attempts each.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = app.addr;
        tasks.push(tokio::spawn(async move {
            let mut tried = 0usize;
            while tried < 500 {
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream"))
                    .await
                    .expect("connects");
                let (answers, code) =
                    until_closed(&mut ws, 50, |i| json!({ "op": "auth", "token": "x", "id": i })).await;
                assert_eq!((answers.len(), code), (3, Some(4429)), "{answers:?}");
                tried += answers.len();
            }
            tried
        }));
    }
    let mut tried = 0;
    for t in tasks {
        tried += t.await.expect("task");
    }
    assert!(tried >= 2_000);
    app.state.access.audit.flush_failures();
    let lines = auth_failure_lines(&audit, 10).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let counted: u64 = lines.iter().map(|l| l["details"]["count"].as_u64().unwrap_or(0)).sum();
    let refused: u64 = lines
        .iter()
        .map(|l| l["details"]["refused_unchecked"].as_u64().unwrap_or(0))
        .sum();
    // The budget is 10 a minute: 10 at once, then one more every 6 s the flood lasts
    // (a loaded machine makes it last longer).
    let refilled = started.elapsed().as_secs() / 6 + 1;
    assert!(
        (10..=10 + refilled).contains(&counted),
        "only the address's budget was checked: {counted}"
    );
    assert_eq!(counted + refused, tried as u64);
    let bytes = std::fs::metadata(&audit).expect("audit").len();
    assert!(bytes < 4_096, "{tried} attempts wrote {bytes} bytes");
    app.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(dir);
}

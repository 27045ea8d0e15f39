//! Order entry over real sockets: a running server (engine, simulator feeds, API),
//! JWT-authenticated REST calls, the internal venue matching two accounts, and every
//! kind of bad input answered with the error contract and nothing changed.

use crate::common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn limit(symbol: &str, side: &str, price: &str, qty: &str) -> Value {
    json!({ "symbol": symbol, "side": side, "type": "limit", "price": price, "qty": qty })
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_venue_lifecycle_fills_and_positions() {
    let app = start().await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");

    let (s, v) = alice.post("/orders", limit("SBZ", "sell", "100.00", "10")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["order"]["status"], "open");
    let sell_id = v["order"]["order_id"].as_str().unwrap().to_owned();

    // Qty decrease keeps priority; the order is found by id and in the list.
    let (s, v) = alice
        .call(
            reqwest::Method::PATCH,
            &format!("/orders/{sell_id}"),
            Some(json!({"qty":"8"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["order"]["qty"], "8");
    let (s, v) = alice.get(&format!("/orders/{sell_id}")).await;
    assert_eq!((s, v["qty"].as_str()), (StatusCode::OK, Some("8")));

    // Bob buys 5 through it: both sides fill at the resting price.
    let (s, v) = bob.post("/orders", limit("SBZ", "buy", "100.50", "5")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["order"]["status"], "filled");
    assert_eq!(v["fills"][0]["price"], "100.00");
    assert_eq!(v["fills"][0]["liquidity"], "taker");

    // The fan-out thread applies events right after the answer; poll briefly.
    let mut alice_fills = Value::Null;
    for _ in 0..50 {
        let (_, v) = alice.get("/fills").await;
        if v["fills"].as_array().is_some_and(|f| !f.is_empty()) {
            alice_fills = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(alice_fills["fills"][0]["qty"], "5", "{alice_fills}");
    assert_eq!(alice_fills["fills"][0]["liquidity"], "maker");
    let (_, p) = alice.get("/positions").await;
    assert_eq!(p["positions"][0]["symbol"], "SBZ");
    assert_eq!(p["positions"][0]["qty"], "-5");
    let (_, p) = bob.get("/positions").await;
    assert_eq!(p["positions"][0]["qty"], "5");
    assert_eq!(p["positions"][0]["avg_price"], "100.00");

    // The internal venue's trade is market data like any venue's.
    let (_, q) = alice.get("/quotes/SBZ").await;
    assert_eq!(q["ask"], "100.00", "{q}");

    // Bob cannot see or touch Alice's order.
    let (s, v) = bob.get(&format!("/orders/{sell_id}")).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"));
    let (s, v) = bob
        .call(reqwest::Method::DELETE, &format!("/orders/{sell_id}"), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"));

    let (s, v) = alice
        .call(reqwest::Method::DELETE, &format!("/orders/{sell_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["order"]["status"], "cancelled");
    let (s, v) = alice
        .call(reqwest::Method::DELETE, &format!("/orders/{sell_id}"), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "ORDER_NOT_OPEN"));

    // Listing with filters and cursor pagination (prices within the 5% collar of the
    // last trade at 100.00).
    for k in 0..3 {
        let (s, _) = alice
            .post("/orders", limit("SBZ", "buy", &format!("9{}.00", k + 6), "1"))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_, page1) = alice.get("/orders?status=open&limit=2").await;
    assert_eq!(page1["orders"].as_array().unwrap().len(), 2);
    assert_eq!(page1["orders"][0]["price"], "98.00", "newest first");
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let (_, page2) = alice.get(&format!("/orders?status=open&limit=2&cursor={cursor}")).await;
    assert_eq!(page2["orders"].as_array().unwrap().len(), 1);
    assert_eq!(page2["orders"][0]["price"], "96.00");
    assert!(page2["next_cursor"].is_null());

    let (s, v) = alice.call(reqwest::Method::DELETE, "/orders?symbol=SBZ", None).await;
    assert_eq!((s, v["cancelled"].as_u64()), (StatusCode::OK, Some(3)));

    let metrics = metrics(&app).await;
    for needle in [
        "stocksblitz_orders_commands_total ",
        "stocksblitz_orders_backlog ",
        "stocksblitz_orders_queue_depth 0",
        "stocksblitz_orders_event_gaps_total 0",
        "direction=\"orders\"",
    ] {
        assert!(metrics.contains(needle), "{needle} in /metrics");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_idempotency_dry_run_and_admin() {
    let app = start().await;
    let alice = Client::new(&app, "alice", "trader");
    let anon = reqwest::Client::new();

    let r = anon
        .post(http(&app, "/api/v1/orders"))
        .json(&limit("SBZ", "buy", "1.00", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "UNAUTHORIZED");
    assert!(v["error"]["request_id"].is_string());
    let forged = Client {
        token: format!("{}x", alice.token),
        ..Client::new(&app, "alice", "trader")
    };
    assert_eq!(forged.get("/orders").await.0, StatusCode::UNAUTHORIZED);
    let viewer = Client::new(&app, "alice", "viewer");
    let (s, v) = viewer.post("/orders", limit("SBZ", "buy", "1.00", "1")).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert_eq!(viewer.get("/orders").await.0, StatusCode::OK, "viewers may read");

    // Idempotency-Key: same body -> the original answer; other body -> 422.
    let send = |key: &str, body: Value| {
        let req = alice
            .http
            .post(format!("{}/orders", alice.base))
            .bearer_auth(&alice.token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, v1) = send("key-1", limit("SBZ", "buy", "50.00", "2")).await;
    let (s2, v2) = send("key-1", limit("SBZ", "buy", "50.00", "2")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(
        v1["order"]["order_id"], v2["order"]["order_id"],
        "the same order, not a second one"
    );
    let (s3, v3) = send("key-1", limit("SBZ", "buy", "50.00", "3")).await;
    assert_eq!(
        (s3, code(&v3)),
        (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_, list) = alice.get("/orders?status=open").await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);

    // Dry run: checks pass or fail exactly as for real, nothing is placed.
    let (s, v) = alice.post("/orders/test", limit("SBZ", "buy", "50.00", "2")).await;
    assert_eq!((s, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = alice.post("/orders/test", limit("SBZ", "buy", "50.03", "2")).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "TICK_SIZE"));
    let (_, list) = alice.get("/orders?status=open").await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);

    // Admin: only admins; kill switch cancels and blocks, release restores.
    let (s, v) = alice
        .post("/admin/kill-switch", json!({"scope":"global","active":true}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let ops = Client::new(&app, "ops", "admin");
    let (s, v) = ops
        .post(
            "/admin/kill-switch",
            json!({"scope":"account","account":"alice","active":true}),
        )
        .await;
    assert_eq!((s, v["cancelled"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (s, v) = alice.post("/orders", limit("SBZ", "buy", "50.00", "1")).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "KILL_SWITCH_ACTIVE"));
    let (s, _) = ops
        .post(
            "/admin/kill-switch",
            json!({"scope":"account","account":"alice","active":false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = ops
        .post("/admin/kill-switch", json!({"scope":"account","active":true}))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_ORDER"));

    // Limits changed at run time show in the account's risk view and apply at once.
    let limits = json!({
        "max_order_qty": "3", "max_order_notional": "1000000", "price_collar_bps": 500,
        "max_open_orders": 10, "max_position_qty": "1000", "max_gross_exposure": "10000000",
        "daily_loss_limit": "100000", "orders_per_sec": 10, "cancels_per_sec": 10, "self_trade": "cancel_both"
    });
    let (s, v) = ops
        .call(reqwest::Method::PUT, "/admin/risk-limits/alice", Some(limits))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = alice.get("/accounts/me/risk").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["limits"]["max_order_qty"], "3.00000000");
    assert_eq!(v["limits"]["self_trade"], "cancel_both");
    assert_eq!(v["usage"]["open_orders"], 0);
    let (s, v) = alice.post("/orders", limit("SBZ", "buy", "50.00", "4")).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "MAX_ORDER_QTY"));
    let (s, v) = ops
        .call(reqwest::Method::PUT, "/admin/risk-limits/nobody", Some(json!({})))
        .await;
    assert!(s.is_client_error(), "{v}");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_order_input_is_refused_and_changes_nothing() {
    let app = start().await;
    let alice = Client::new(&app, "alice", "trader");
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"symbol":"NOPE","side":"buy","type":"limit","price":"1","qty":"1"}),
            StatusCode::NOT_FOUND,
            "UNKNOWN_SYMBOL",
        ),
        (
            json!({"symbol":"SBZ","side":"up","type":"limit","price":"1","qty":"1"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"iceberg","price":"1","qty":"1"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            limit("SBZ", "buy", "1.00", "0"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUANTITY",
        ),
        (
            limit("SBZ", "buy", "1.00", "-5"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUANTITY",
        ),
        (
            limit("SBZ", "buy", "1.00", "1.5"),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            limit("SBZ", "buy", "NaN", "1"),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            limit("SBZ", "buy", "1.001", "1"),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            limit("SBZ", "buy", "99999999999999999999", "1"),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            limit("SBZ", "buy", "-1.00", "1"),
            StatusCode::BAD_REQUEST,
            "INVALID_PRICE",
        ),
        (
            limit("SBZ", "buy", "1.03", "1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "TICK_SIZE",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"limit","qty":"1"}),
            StatusCode::BAD_REQUEST,
            "PRICE_REQUIRED",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"market","price":"1.00","qty":"1"}),
            StatusCode::BAD_REQUEST,
            "PRICE_NOT_ALLOWED",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"limit","price":1.0,"qty":"1"}),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"limit","price":"1.00","qty":"1","colour":"red"}),
            StatusCode::BAD_REQUEST,
            "INVALID_BODY",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"limit","price":"1.00","qty":"1","client_order_id":"has space"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"limit","price":"1.00","qty":"1","time_in_force":"gtd"}),
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER",
        ),
        (
            json!({"symbol":"SBZ","side":"buy","type":"market","qty":"1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "NO_LIQUIDITY",
        ),
    ];
    for (body, status, want) in cases {
        let (s, v) = alice.post("/orders", body.clone()).await;
        assert_eq!((s, code(&v)), (status, want), "{body} -> {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    use reqwest::Method;
    let (s, v) = alice
        .raw(
            Method::POST,
            "/orders",
            Some("application/json"),
            b"{\"symbol\":".to_vec(),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "INVALID_BODY"),
        "truncated JSON"
    );
    let (s, v) = alice
        .raw(Method::POST, "/orders", Some("text/plain"), b"{}".to_vec())
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    );
    let (s, v) = alice
        .raw(Method::POST, "/orders", Some("application/json"), vec![b' '; 70_000])
        .await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"));
    let (s, v) = alice.get("/orders/not-a-number").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"));
    let (s, v) = alice.get("/orders?status=sideways").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"));
    let (s, v) = alice.get("/orders?limit=0").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"));

    // Duplicate client order ids among open orders.
    let dup = json!({"symbol":"SBZ","side":"buy","type":"limit","price":"1.00","qty":"1","client_order_id":"dup-1"});
    assert_eq!(alice.post("/orders", dup.clone()).await.0, StatusCode::CREATED);
    let (s, v) = alice.post("/orders", dup).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "DUPLICATE_CLIENT_ORDER_ID"));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (_, list) = alice.get("/orders").await;
    assert_eq!(
        list["orders"].as_array().unwrap().len(),
        1,
        "only the one valid order exists: {list}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_orders_fill_against_the_live_feed() {
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;
    let alice = Client::new(&app, "alice", "trader");
    // A marketable order takes the simulated venue's displayed best offer.
    let (s, v) = alice
        .post(
            "/orders",
            json!({"symbol":"BTCUSDT","side":"buy","type":"market","qty":"0.00100"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let fills = v["fills"].as_array().expect("fills");
    assert!(!fills.is_empty(), "filled against the feed: {v}");
    let filled: f64 = fills
        .iter()
        .map(|f| f["qty"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(filled <= 0.001 + 1e-12, "never more than the order");
    // A limit far below the market rests on the paper venue (inside the 5% collar).
    let (_, q) = alice.get("/quotes/BTCUSDT").await;
    let bid: f64 = q["bid"].as_str().unwrap().parse().unwrap();
    let price = format!("{:.2}", (bid * 0.97 * 100.0).floor() / 100.0);
    let (s, v) = alice.post("/orders", limit("BTCUSDT", "buy", &price, "0.00100")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["order"]["status"], "open");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, p) = alice.get("/positions").await;
    assert_eq!(p["positions"][0]["symbol"], "BTCUSDT", "{p}");
    assert!(p["positions"][0]["mark_price"].is_string());
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_page_with_a_cursor_and_nothing_is_skipped_or_repeated() {
    let app = start().await;
    let alice = Client::new(&app, "alice", "trader");
    let bob = Client::new(&app, "bob", "trader");
    // Seven fills for bob: one resting sell of 7 taken one lot at a time.
    let (s, v) = alice.post("/orders", limit("SBZ", "sell", "100.00", "7")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for _ in 0..7 {
        let (s, v) = bob.post("/orders", limit("SBZ", "buy", "100.00", "1")).await;
        assert_eq!(
            (s, v["order"]["status"].as_str()),
            (StatusCode::CREATED, Some("filled")),
            "{v}"
        );
    }
    let mut all = Vec::new();
    for _ in 0..50 {
        let (_, v) = bob.get("/fills?limit=100").await;
        all = v["fills"].as_array().cloned().unwrap_or_default();
        if all.len() == 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all.len(), 7, "{all:?}");
    // Pages of 3: 3, 3, 1, the same fills in the same order, and a null cursor at the end.
    for size in 1..=8usize {
        let mut paged = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/fills?limit={size}&cursor={c}"),
                None => format!("/fills?limit={size}"),
            };
            let (s, v) = bob.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let page = v["fills"].as_array().cloned().unwrap_or_default();
            assert!(page.len() <= size);
            paged.extend(page);
            pages += 1;
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, all, "page size {size}");
        assert_eq!(pages, 7usize.div_ceil(size), "page size {size}");
    }
    for bad in ["x", "-1", "1.5", ""] {
        let (s, v) = bob.get(&format!("/fills?cursor={bad}")).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "INVALID_PARAMETER"),
            "cursor {bad:?}"
        );
    }
    app.shutdown().await.unwrap();
}

// ---- the README's list of error codes is generated from the code ----

/// String literals that look like codes but are not error codes (HTTP methods, Redis
/// commands, symbols, header values, ...). A new literal that is neither here nor in
/// README's list fails the test below.
const NOT_ERROR_CODES: &[&str] = &[
    "BLOCK",
    "BTCUSDT",
    "BUSYGROUP",
    "CARGO_PKG_VERSION",
    "CONNECT",
    "COUNT",
    "CREATE",
    "CSS",
    "DBSIZE",
    "DEL",
    "DELETE",
    "DENY",
    "EX",
    "GET",
    "GROUP",
    "GROUPS",
    "HEAD",
    "HTML",
    "INFO",
    "INR",
    "JWT",
    "KEEPTTL",
    "LIVE",
    "MATCH",
    "MAXLEN",
    "MKSTREAM",
    "NX",
    "OK",
    "OPTIONS",
    "OTHER",
    "PATCH",
    "PING",
    "POST",
    "PUBLISH",
    "PUT",
    "PX",
    "SBZ",
    "SCAN",
    "SET",
    "STREAMS",
    "TRACE",
    "XACK",
    "XADD",
    "XGROUP",
    "XINFO",
    "XRANGE",
    "XREAD",
    "XREADGROUP",
    "XREVRANGE",
    "XX",
];

/// Every error code the API can answer with: upper-case string literals in the API's
/// non-test sources (`ApiError` codes, WebSocket error codes), minus the list above.
fn api_error_codes() -> std::collections::BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs") {
                // `tests.rs` files are test modules (`#[cfg(test)] mod tests;`).
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut codes = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for lit in text.split('"').skip(1).step_by(2) {
            let upper = lit.starts_with(|c: char| c.is_ascii_uppercase())
                && lit
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !lit.ends_with('_')
                && !lit.contains("__");
            if upper && !NOT_ERROR_CODES.contains(&lit) {
                codes.insert(lit.to_owned());
            }
        }
    }
    codes
}

/// The README section, as generated from `Reject::ALL` and the API's codes.
fn error_code_section() -> String {
    use stocksblitz_engine::orders::Reject;
    let mut s = String::from(
        "Order rejections (`engine/src/orders/reject.rs`), each with its HTTP status and what to fix:\n\n",
    );
    for r in Reject::ALL {
        let status = stocksblitz_api::orders::entry::reject_status(r).as_u16();
        s.push_str(&format!("- `{}` ({status}): {}\n", r.code(), r.message()));
    }
    let engine: std::collections::BTreeSet<&str> = Reject::ALL.iter().map(|r| r.code()).collect();
    let api: Vec<String> = api_error_codes()
        .into_iter()
        .filter(|c| !engine.contains(c.as_str()))
        .map(|c| format!("`{c}`"))
        .collect();
    s.push_str(&format!(
        "\nAPI errors (request shape, auth, limits, availability; the message says what to fix): {}.\n",
        api.join(", ")
    ));
    s
}

const BEGIN: &str = "<!-- error-codes:begin";
const END: &str = "<!-- error-codes:end -->";

/// README.md's error-code section equals the one generated from the code; run with
/// `UPDATE_README=1` to rewrite it.
#[test]
fn readme_lists_every_error_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let begin = readme.find(BEGIN).expect("README has the error-code section");
    let body = begin + readme[begin..].find("-->").expect("end of the begin marker") + 4;
    let end = readme.find(END).expect("README has the error-code section's end");
    let generated = error_code_section();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{}{}", &readme[..body], generated, &readme[end..]);
        std::fs::write(&path, updated).expect("write README.md");
        return;
    }
    let current = &readme[body..end];
    if let Some(line) = generated.lines().find(|l| !current.contains(*l)) {
        panic!("README.md's error codes are out of date (run with UPDATE_README=1): missing {line:?}");
    }
    assert_eq!(
        current, generated,
        "README.md's error codes differ (run with UPDATE_README=1)"
    );
    for code in [
        "INVALID_BODY",
        "UNSUPPORTED_MEDIA_TYPE",
        "INVALID_QUANTITY",
        "PRICE_REQUIRED",
        "INVALID_ORDER",
        "ORDER_NOT_OPEN",
        "MARKET_DATA_UNAVAILABLE",
    ] {
        assert!(current.contains(&format!("`{code}`")), "{code} is listed");
    }
}

// ---- paper venue: no fills on bad data, depth sweeps, cancel reasons (issue 15) ----

/// The quote's data quality as the API shows it.
async fn quality(app: &stocksblitz_api::app::RunningApp, symbol: &str) -> String {
    let v: Value = reqwest::get(http(app, &format!("/api/v1/quotes/{symbol}")))
        .await
        .expect("quote")
        .json()
        .await
        .expect("json");
    v["quality"].as_str().unwrap_or("").to_owned()
}

async fn wait_quality(app: &stocksblitz_api::app::RunningApp, symbol: &str, pred: impl Fn(&str) -> bool) -> String {
    for _ in 0..400 {
        let q = quality(app, symbol).await;
        if pred(&q) {
            return q;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{symbol} never reached the expected data quality");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_orders_sweep_the_depth_and_refuse_stale_data() {
    // The simulator on a port of our own (its fault control), and a short engine
    // staleness threshold.
    let sim_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let app = start_with(&test_config(|d| {
        d["simulator"]["listen"] = toml::Value::String(format!("127.0.0.1:{sim_port}"));
        d["engine"]["stale_after_ms"] = toml::Value::Integer(300);
    }))
    .await;
    wait_live(&app, "BTCUSDT").await;
    let alice = Client::new(&app, "alice", "trader");
    let mut ws = ws_connect(&app).await;
    send(&mut ws, json!({"op":"auth","id":1,"token":token("alice","trader")})).await;
    recv_until(&mut ws, std::time::Duration::from_secs(10), |v| v["id"] == 1)
        .await
        .expect("auth answer");
    send(&mut ws, json!({"op":"subscribe","channels":["orders"],"id":2})).await;
    recv_until(&mut ws, std::time::Duration::from_secs(10), |v| v["type"] == "snapshot")
        .await
        .expect("snapshot");

    // The simulated book has 20 levels of 1-50 lots (0.00001 BTC) a side: 0.01 BTC
    // sweeps level after level and the rest is cancelled with its reason.
    let (s, v) = alice
        .post(
            "/orders",
            json!({"symbol":"BTCUSDT","side":"buy","type":"market","qty":"0.01000"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let prices: Vec<f64> = v["fills"]
        .as_array()
        .expect("fills")
        .iter()
        .map(|f| f["price"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(prices.len() >= 2, "swept more than the best level: {v}");
    assert!(
        prices.windows(2).all(|w| w[0] < w[1]),
        "level by level, best first: {prices:?}"
    );
    assert_eq!(v["order"]["status"], "cancelled", "{v}");
    let reason = v["reason"].as_str().expect("a cancelled order says why").to_owned();
    assert!(["depth_limit", "unfilled"].contains(&reason.as_str()), "{reason}");
    let order_id = v["order"]["order_id"].as_str().unwrap().to_owned();
    // The same reason on the orders channel.
    let update = recv_until(&mut ws, std::time::Duration::from_secs(10), |m| {
        m["data"]["event"] == "cancelled" && m["data"]["order"]["order_id"] == order_id.as_str()
    })
    .await
    .expect("the cancel reaches the orders channel");
    assert_eq!(update["data"]["reason"], reason.as_str());

    // Internal venue: self-trade prevention and an IOC remainder say why, too.
    let bob = Client::new(&app, "bob", "trader");
    let (s, v) = alice.post("/orders", limit("SBZ", "sell", "123.00", "2")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ioc = |qty: &str| json!({"symbol":"SBZ","side":"buy","type":"limit","price":"123.00","qty":qty,"time_in_force":"ioc"});
    let (s, v) = alice.post("/orders", ioc("3")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["order"]["status"].as_str(), v["reason"].as_str()),
        (Some("cancelled"), Some("self_trade_prevention")),
        "{v}"
    );
    let (s, v) = bob.post("/orders", ioc("5")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["fills"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["reason"], "unfilled", "the IOC remainder: {v}");
    let (_, v) = bob.post("/orders", limit("SBZ", "buy", "1.00", "1")).await;
    assert!(v["reason"].is_null(), "a resting order was not cancelled: {v}");

    // A rejected cancel names the order id that was sent.
    let (s, v) = alice.call(reqwest::Method::DELETE, "/orders/987654321", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "ORDER_NOT_FOUND"), "{v}");
    assert_eq!(v["error"]["details"]["order_id"], "987654321");

    // Silence the feed: the quote goes STALE and the paper venue takes no order, over
    // REST or WebSocket, with a stable code and a message.
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{sim_port}/control/faults/binance"))
        .json(&json!({"kind":"silence","ms":2500}))
        .send()
        .await
        .expect("fault control");
    assert!(r.status().is_success(), "{:?}", r.status());
    let q = wait_quality(&app, "BTCUSDT", |q| q != "LIVE").await;
    assert_eq!(q, "STALE");
    let (s, v) = alice
        .post(
            "/orders",
            json!({"symbol":"BTCUSDT","side":"buy","type":"market","qty":"0.00100"}),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "MARKET_DATA_UNAVAILABLE"),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("LIVE"), "{v}");
    send(
        &mut ws,
        json!({"op":"order.new","id":"w1","order":{"symbol":"BTCUSDT","side":"buy","type":"market","qty":"0.00100"}}),
    )
    .await;
    let err = recv_until(&mut ws, std::time::Duration::from_secs(10), |m| m["id"] == "w1")
        .await
        .expect("answer");
    assert_eq!(err["error"]["code"], "MARKET_DATA_UNAVAILABLE", "{err}");

    // LIVE again: the same order fills.
    wait_quality(&app, "BTCUSDT", |q| q == "LIVE").await;
    let (s, v) = alice
        .post(
            "/orders",
            json!({"symbol":"BTCUSDT","side":"buy","type":"market","qty":"0.00001"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["fills"].as_array().map(Vec::len), Some(1), "{v}");
    app.shutdown().await.unwrap();
}

//! The traders' dashboard in a real browser: headless Chromium (Debian's `chromium`;
//! `scripts/test.sh` installs it) driven over the Chrome DevTools Protocol. It loads
//! the dashboard from a running server, sees public quotes updating before any login
//! (the trading panels hidden, nothing scrolling sideways), logs in with a token on the
//! same WebSocket, places an order, sees it in the blotter, cancels it, and saves
//! screenshots (`target/dashboard-public.png`, `target/dashboard.png`). Any console
//! error or uncaught exception fails the test, and so does a second WebSocket.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Browser {
    child: Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts headless Chromium; returns it and its DevTools WebSocket URL.
fn launch() -> (Browser, String) {
    let profile = fresh_dir("chromium");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let mut child = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1400,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium runs (scripts/test.sh installs Debian's chromium)");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("chromium printed its DevTools address");
    (Browser { child, profile }, url)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools session on one page.
struct Cdp {
    ws: Ws,
    next: u64,
    session: Option<String>,
    /// Console errors and uncaught exceptions seen so far.
    errors: Vec<String>,
    /// WebSockets the page opened.
    websockets: Vec<String>,
}

impl Cdp {
    fn note(&mut self, m: &Value) {
        match m["method"].as_str() {
            Some("Runtime.consoleAPICalled") if matches!(m["params"]["type"].as_str(), Some("error" | "assert")) => {
                self.errors.push(format!("console: {}", m["params"]["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", m["params"]["exceptionDetails"]));
            }
            Some("Log.entryAdded") if m["params"]["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", m["params"]["entry"]));
            }
            Some("Network.webSocketCreated") => {
                self.websockets
                    .push(m["params"]["url"].as_str().unwrap_or("").to_owned());
            }
            _ => {}
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::Text(msg.to_string().into())).await.expect("send");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("open")
                .expect("frame");
            let Message::Text(t) = frame else { continue };
            let m: Value = serde_json::from_str(t.as_str()).expect("json");
            if m["id"] == id {
                assert!(m["error"].is_null(), "{method}: {}", m["error"]);
                return m["result"].clone();
            }
            self.note(&m);
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{js}: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is truthy; returns its value.
    async fn wait_for(&mut self, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(js).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_from_the_dashboard_in_a_real_browser() {
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;
    let (_browser, url) = launch();
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.expect("devtools");
    let mut cdp = Cdp {
        ws,
        next: 0,
        session: None,
        errors: Vec::new(),
        websockets: Vec::new(),
    };
    let target = cdp.call("Target.createTarget", json!({ "url": "about:blank" })).await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    cdp.session = attached["sessionId"].as_str().map(str::to_owned);
    for domain in ["Runtime.enable", "Log.enable", "Page.enable", "Network.enable"] {
        cdp.call(domain, json!({})).await;
    }
    cdp.call("Page.navigate", json!({ "url": http(&app, "/") })).await;
    // The script has wired the page up (it runs after the HTML is parsed). Until the
    // new document's body is parsed, `document.body` is null.
    cdp.wait_for("the page script", "document.body?.dataset.ready === 'true'")
        .await;

    // Before any login: public quotes arrive and keep changing over the stream.
    let cell = "document.querySelector('#quotes tbody tr[data-symbol=\"BTCUSDT\"] td:nth-child(2)')?.textContent";
    let first = cdp.wait_for("a public BTCUSDT bid", cell).await;
    let quality = "document.querySelector('#quotes tbody tr[data-symbol=\"BTCUSDT\"] td:nth-child(5)')?.textContent";
    assert_eq!(cdp.wait_for("quality", quality).await, "LIVE");
    cdp.wait_for(
        "the public bid to move",
        &format!("(() => {{ const v = {cell}; return v && v !== {first}; }})()"),
    )
    .await;
    cdp.wait_for(
        "a depth ladder",
        "document.querySelectorAll('#ladder tbody tr').length > 0",
    )
    .await;
    // The trading panels are hidden (not just empty), the login form is shown, and the
    // quotes panel fits without scrolling sideways.
    let shown = |id: &str| format!("getComputedStyle(document.getElementById('{id}')).display !== 'none'");
    for (id, want) in [
        ("ticket-panel", false),
        ("blotter-panel", false),
        ("login", true),
        ("quotes-panel", true),
        ("market-panel", true),
    ] {
        assert_eq!(cdp.eval(&shown(id)).await, json!(want), "{id} shown: {want}");
    }
    let overflow = cdp
        .eval("(() => { const p = document.getElementById('quotes-panel'); return p.scrollWidth - p.clientWidth; })()")
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the quotes panel scrolls sideways by {overflow}px"
    );
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("data"))
        .expect("base64");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-public.png");
    std::fs::write(&out, &png).expect("screenshot saved");

    // Log in with a token, as a trader would paste it: the same socket authenticates.
    let tok = token("alice", "trader");
    cdp.eval(&format!(
        "document.getElementById('token').value = {tok:?}; \
         document.getElementById('login-form').requestSubmit(); true"
    ))
    .await;
    cdp.wait_for(
        "the trading panels",
        "!document.getElementById('ticket-panel').hidden && document.getElementById('who').textContent.startsWith('alice')",
    )
    .await;
    assert_eq!(cdp.eval(&shown("login")).await, json!(false));
    assert_eq!(cdp.eval(&shown("blotter-panel")).await, json!(true));

    // Select SBZ with the keyboard-free path (a click), then place a limit buy.
    cdp.eval("document.querySelector('#quotes tbody tr[data-symbol=\"SBZ\"]').click(); true")
        .await;
    cdp.wait_for("SBZ selected", "document.getElementById('t-symbol').value === 'SBZ'")
        .await;
    cdp.eval(
        "document.querySelector('input[name=side][value=buy]').checked = true; \
         document.getElementById('t-type').value = 'limit'; \
         document.getElementById('t-qty').value = '3'; \
         document.getElementById('t-price').value = '95.00'; \
         document.getElementById('ticket').requestSubmit(); true",
    )
    .await;
    let result = cdp
        .wait_for(
            "the ticket's answer",
            "document.getElementById('ticket-result').textContent",
        )
        .await;
    assert!(result.as_str().is_some_and(|r| r.starts_with("Placed")), "{result}");
    let order_id = cdp
        .wait_for(
            "the order in the blotter",
            "document.querySelector('#blotter tbody tr')?.dataset.order",
        )
        .await;
    let row = cdp
        .eval("[...document.querySelectorAll('#blotter tbody tr td')].map(td => td.textContent)")
        .await;
    assert_eq!(row[1], "SBZ", "{row}");
    assert_eq!(
        (row[2].as_str(), row[4].as_str(), row[5].as_str()),
        (Some("buy"), Some("95.00"), Some("3"))
    );

    // The same order over REST.
    let alice = Client::new(&app, "alice", "trader");
    let (_, listed) = alice.get("/orders?status=open").await;
    assert_eq!(listed["orders"][0]["order_id"], order_id, "{listed}");

    // Screenshot with the order on screen, then cancel it from the blotter.
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    std::fs::write(&out, &png).expect("screenshot saved");

    cdp.eval(&format!(
        "document.querySelector('#blotter button[data-order=\"{}\"]').click(); true",
        order_id.as_str().expect("id")
    ))
    .await;
    cdp.wait_for(
        "the order to leave the blotter",
        "document.querySelectorAll('#blotter tbody tr').length === 0",
    )
    .await;
    let (_, listed) = alice.get("/orders?status=open").await;
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(0), "{listed}");

    // Keyboard: arrows move the selection.
    cdp.eval("document.activeElement?.blur(); true").await;
    let before = cdp.eval("document.getElementById('selected').textContent").await;
    cdp.call(
        "Input.dispatchKeyEvent",
        json!({ "type": "keyDown", "key": "ArrowDown", "code": "ArrowDown", "windowsVirtualKeyCode": 40 }),
    )
    .await;
    let after = cdp
        .wait_for(
            "a new selection",
            &format!(
        "(() => {{ const s = document.getElementById('selected').textContent; return s !== {before} && s; }})()"
    ),
        )
        .await;
    assert_ne!(before, after);

    // Nothing went wrong in the page, and it used one WebSocket throughout.
    cdp.eval("new Promise(r => setTimeout(() => r(true), 300))").await;
    assert!(cdp.errors.is_empty(), "console errors: {:#?}", cdp.errors);
    assert_eq!(cdp.websockets.len(), 1, "{:?}", cdp.websockets);
    app.shutdown().await.expect("shutdown");
}

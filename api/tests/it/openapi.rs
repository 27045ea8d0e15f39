//! The OpenAPI document: served at /api/v1/openapi.json and covering every route; and,
//! with schemathesis (PyPI; `scripts/test.sh` installs it into `target/tools/venv`),
//! every response the running server gives to generated requests (valid and invalid)
//! conforms to it: no server errors, no undocumented statuses, content types or
//! headers, no schema violations.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn document(app: &stocksblitz_api::app::RunningApp) -> Value {
    let r = reqwest::get(http(app, "/api/v1/openapi.json")).await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route() {
    let app = start().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    // The router registers routes only from handlers' #[utoipa::path] (`routes!`), so
    // whatever it serves is in the document; a plain axum `.route(` would not be.
    let router = include_str!("../../src/http/router.rs");
    assert!(
        !router.contains(".route("),
        "register routes with .routes(routes!(handler))"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let client = reqwest::Client::new();
    let admin = token("alice", "admin");
    let mut operations = 0;
    for (path, ops) in paths {
        let sent = path
            .replace("{symbol}", "BTCUSDT")
            .replace("{id}", "42")
            .replace("{account}", "alice");
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = ops.get(method) else { continue };
            operations += 1;
            assert!(
                op["responses"]["default"].is_object(),
                "{method} {path}: no error response"
            );
            // The server has the route: neither the fallback's 404 nor a 405.
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = client
                .request(m, http(&app, &sent))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("request");
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {sent}: {body}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["code"] == "NOT_FOUND"),
                "{method} {sent} is documented but not routed: {body}"
            );
        }
    }
    app.shutdown().await.expect("shutdown");
    assert!(operations >= 30, "{operations} operations");
    // Private routes say how to authenticate.
    assert!(doc["paths"]["/api/v1/orders"]["post"]["security"].is_array());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["hmac"].is_object());
    // Every write says what it is audited as and what a signing service needs.
    for (path, ops) in paths {
        for method in ["post", "put", "patch", "delete"] {
            if let Some(op) = ops.get(method) {
                assert!(op["x-audit-action"].is_string(), "{method} {path}: no x-audit-action");
                assert!(
                    op.get("x-signed-operation").is_some(),
                    "{method} {path}: no x-signed-operation"
                );
            }
        }
    }
}

/// The schemathesis executable: `SBZ_SCHEMATHESIS`, else the one `scripts/test.sh`
/// installs.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("SBZ_SCHEMATHESIS") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin/schemathesis");
    assert!(
        p.exists(),
        "schemathesis is not installed at {}: run scripts/test.sh (it installs it), or set SBZ_SCHEMATHESIS",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let exe = schemathesis();
    let dir = fresh_dir("schemathesis");
    std::fs::create_dir_all(&dir).expect("dir");
    let app = start().await;
    wait_live(&app, "BTCUSDT").await;
    let base = format!("http://{}", app.addr);
    let schema = format!("{base}/api/v1/openapi.json");
    let token = token("alice", "admin");
    let report = dir.clone();
    let work = dir.clone();
    // Blocking: schemathesis drives the server, which runs on this runtime's workers.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .arg("run")
            .arg(&schema)
            .args(["--url", &base])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
            ])
            .args(["--phases", "examples,coverage,fuzzing"])
            // One worker: CPython 3.11's AST parser is not safe across the threads
            // hypothesis would use.
            .args(["--max-examples", "40", "--seed", "7", "--workers", "1", "--no-color"])
            .args(["--generation-database", "none"])
            // Authenticate with the bearer token only (never made-up signature headers).
            .args(["--generation-with-security-parameters", "false"])
            .arg("--report-dir")
            .arg(&report)
            // Its cache (`.schemathesis/`) goes to the test's own directory, not the source tree.
            .current_dir(&work)
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .expect("join");
    app.shutdown().await.expect("shutdown");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passed") || stdout.contains("No issues found"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

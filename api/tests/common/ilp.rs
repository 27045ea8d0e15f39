//! ILP servers for the sink tests: a recording HTTP endpoint (exact lines) and a real
//! VictoriaMetrics (`victoria-metrics` from Debian; `scripts/test.sh` installs it),
//! each on a free loopback port, stopped when dropped.
//!
//! VictoriaMetrics stores one sample per ILP field (`<table>_<field>`, tags as labels,
//! millisecond timestamps). [`Victoria::start`] dedups per (series, millisecond), like
//! a QuestDB DEDUP key for rows that differ there; [`Victoria::start_raw`] keeps every
//! sample, re-sent ones included, so a test can count rows by their own keys
//! ([`Victoria::samples`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

/// Records every ILP body and SQL query it receives; can be told to fail.
#[derive(Clone, Default)]
pub struct Recorder {
    pub bodies: Arc<Mutex<Vec<String>>>,
    pub queries: Arc<Mutex<Vec<String>>>,
    /// The `Authorization` header of every request (empty when absent).
    pub auth: Arc<Mutex<Vec<String>>>,
    pub fail: Arc<Mutex<bool>>,
    /// A body containing this is refused with 400 and a QuestDB-style JSON error.
    pub poison: Arc<Mutex<Option<String>>>,
}

impl Recorder {
    pub fn lines(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

fn note_auth(r: &Recorder, headers: &axum::http::HeaderMap) {
    let a = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.auth.lock().unwrap().push(a);
}

async fn write(State(r): State<Recorder>, headers: axum::http::HeaderMap, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    note_auth(&r, &headers);
    if *r.fail.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Some(p) = r.poison.lock().unwrap().as_deref() {
        if text.contains(p) {
            let err = serde_json::json!({
                "code": "invalid",
                "message": "failed to parse line protocol: errors encountered on line(s): invalid field",
                "line": 1,
                "errorId": "test-1"
            });
            return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
        }
    }
    r.bodies.lock().unwrap().push(text);
    StatusCode::NO_CONTENT.into_response()
}

async fn exec(
    State(r): State<Recorder>,
    headers: axum::http::HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> StatusCode {
    note_auth(&r, &headers);
    r.queries
        .lock()
        .unwrap()
        .push(q.get("query").cloned().unwrap_or_default());
    StatusCode::OK
}

/// Serves `/write`, `/ping` and `/exec` on a free port; returns its `host:port`.
pub async fn recorder() -> (String, Recorder) {
    let r = Recorder::default();
    let app = Router::new()
        .route("/write", post(write))
        .route("/ping", get(|| async { StatusCode::NO_CONTENT }))
        .route("/exec", get(exec))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, r)
}

/// A VictoriaMetrics server with its own storage directory.
pub struct Victoria {
    pub addr: String,
    storage: PathBuf,
    child: Option<Child>,
    dedup: bool,
}

/// One stored sample: the series' labels (without `__name__`), its millisecond
/// timestamp and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: std::collections::BTreeMap<String, String>,
    pub ts_ms: i64,
    pub value: f64,
}

impl Victoria {
    pub fn start(storage: &Path) -> Self {
        Self::start_with(storage, true)
    }

    /// A server that keeps every sample (no dedup): re-sent rows are stored again.
    pub fn start_raw(storage: &Path) -> Self {
        Self::start_with(storage, false)
    }

    fn start_with(storage: &Path, dedup: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut v = Self {
            addr: format!("127.0.0.1:{port}"),
            storage: storage.to_path_buf(),
            child: None,
            dedup,
        };
        v.restart();
        v
    }

    /// A handle on a server another `Victoria` runs (for counting from another thread).
    pub fn attach(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            storage: PathBuf::new(),
            child: None,
            dedup: true,
        }
    }

    /// The server's process id (to pause it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("a running server")
    }

    /// SIGSTOP: the server keeps its sockets (connections are accepted by the kernel,
    /// requests sit unanswered) but does nothing until [`Victoria::resume`].
    pub fn pause(&self) {
        let ok = Command::new("kill").arg("-STOP").arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "SIGSTOP victoria-metrics");
    }

    pub fn resume(&self) {
        let ok = Command::new("kill").arg("-CONT").arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "SIGCONT victoria-metrics");
    }

    /// Every stored sample of metric `name` (e.g. `trades_seq`), duplicates included.
    pub fn samples(&self, name: &str) -> Vec<Sample> {
        let _ = ureq::get(&format!("http://{}/internal/force_flush", self.addr)).call();
        let body = ureq::get(&format!("http://{}/api/v1/export", self.addr))
            .query("match[]", format!("{{__name__=\"{name}\"}}"))
            .call()
            .expect("export")
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .expect("export body");
        let mut out = Vec::new();
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line");
            let labels: std::collections::BTreeMap<String, String> = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let values = v["values"].as_array().expect("values");
            let stamps = v["timestamps"].as_array().expect("timestamps");
            assert_eq!(values.len(), stamps.len());
            for (value, ts) in values.iter().zip(stamps) {
                out.push(Sample {
                    labels: labels.clone(),
                    ts_ms: ts.as_i64().expect("ts"),
                    value: value.as_f64().expect("value"),
                });
            }
        }
        out
    }

    /// (Re)starts the server on the same port and storage.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("victoria-metrics");
        cmd.arg(format!("-httpListenAddr={}", self.addr))
            .arg(format!("-storageDataPath={}", self.storage.display()));
        if self.dedup {
            // A re-sent row (same series, same millisecond) is stored once, as QuestDB's
            // DEDUP UPSERT KEYS do.
            cmd.arg("-dedup.minScrapeInterval=1ms");
        }
        let child = cmd
            .arg("-search.latencyOffset=0s")
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "victoria-metrics must be installed (Debian package victoria-metrics; scripts/test.sh installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok()
                && ureq::get(&format!("http://{}/health", self.addr)).call().is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("victoria-metrics did not start on {}", self.addr);
    }

    /// A graceful stop (SIGTERM: the server writes what it acknowledged to disk; a
    /// SIGKILL would lose its own recent, acknowledged data, which is no test of ours).
    pub fn stop(&mut self) {
        // A paused server (a test that failed mid-pause) takes the signal too.
        if let Some(c) = self.child.take() {
            super::process::terminate(c, Duration::from_secs(20));
        }
    }

    /// Samples stored for metrics whose name matches `re` (e.g. `trades_price`).
    pub fn count(&self, re: &str) -> usize {
        let _ = ureq::get(&format!("http://{}/internal/force_flush", self.addr)).call();
        let body = ureq::get(&format!("http://{}/api/v1/export", self.addr))
            .query("match[]", format!("{{__name__=~\"{re}\"}}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["values"].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// Polls until `count(re)` reaches `want` (or the deadline); returns the last count.
    pub fn wait_count(&self, re: &str, want: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let n = self.count(re);
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.stop();
    }
}

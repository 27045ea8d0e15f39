//! The real `stocksblitz` binary as a child process, for tests that kill it or read
//! its logs.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The real binary on a config file, its output in `log`.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    /// A failing test does not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub async fn spawn_server(config: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
    spawn_node(config, log, env, &[], free_port()).await
}

/// [`spawn_server`] with extra `serve` arguments (`--role api`), listening on `port`
/// (a restarted node keeps its address).
pub async fn spawn_node(config: &Path, log: &Path, env: &[(&str, &str)], args: &[&str], port: u16) -> Server {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    // SBZ_TEST_BIN: another build of the binary (a release build, to measure).
    let bin = std::env::var_os("SBZ_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_stocksblitz").into());
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env("STOCKSBLITZ_API_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("SBZ_JWT_SECRET")
        .envs(env.iter().copied())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("server starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health/live")).send().await {
            if r.status().is_success() {
                return Server {
                    child,
                    base: format!("{base}/api/v1"),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "server did not come up; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Stops a child with SIGTERM (and SIGCONT, in case a test left it stopped), waiting up
/// to `grace` before SIGKILL.
pub fn terminate(mut child: Child, grace: Duration) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

//! The operator scripts in scripts/: shellcheck-clean (Debian's shellcheck; the test
//! script installs it), each answers --help, the host tuning check changes nothing
//! without --apply, a capture recorded from the simulator through the real binary
//! replays through the venue's parser, and setup.sh installs into a scratch root on a
//! host without credentials.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scripts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("scripts"))
        .expect("scripts/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    v.sort();
    v
}

#[test]
fn scripts_pass_shellcheck_and_answer_help() {
    let all = scripts();
    assert!(all.len() >= 7, "{all:?}");
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(all.iter().map(|p| p.strip_prefix(root()).unwrap_or(p)))
        .current_dir(root())
        .output()
        .expect("shellcheck is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for s in all.iter().filter(|p| !p.ends_with("lib.sh") && !p.ends_with("test.sh")) {
        let out = Command::new(s).arg("--help").output().expect("runs");
        assert!(out.status.success(), "{} --help", s.display());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{} --help",
            s.display()
        );
        let out = Command::new(s).arg("--no-such-flag").output().expect("runs");
        assert!(!out.status.success(), "{} refuses unknown flags", s.display());
    }
}

#[test]
fn host_tuning_only_reports_without_apply() {
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    let out = Command::new(root().join("scripts/tune-host.sh"))
        .args(["--cores", "1"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("engine/feed cores: 1"), "{text}");
    assert!(text.contains("vm.swappiness"), "{text}");
    assert!(text.contains("run with --apply"), "{text}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").ok(),
        swappiness,
        "nothing changed"
    );
    // A core list that leaves nothing for the OS is refused.
    let all = format!("0-{}", std::thread::available_parallelism().map_or(1, |n| n.get()) - 1);
    let out = Command::new(root().join("scripts/tune-host.sh"))
        .args(["--cores", &all])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

#[test]
fn a_capture_from_the_simulator_replays_through_the_parser() {
    let dir = std::env::temp_dir().join(format!("sbz-capture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let capture = dir.join("binance.cap");
    let bin = env!("CARGO_BIN_EXE_stocksblitz");
    let out = Command::new(root().join("scripts/capture.sh"))
        .args(["--feed", "binance", "--seconds", "4", "--out"])
        .arg(&capture)
        .env("SBZ_BIN", bin)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "capture.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&capture).expect("capture written");
    assert!(text.lines().count() > 10, "frames captured: {}", text.lines().count());
    assert!(text.lines().all(|l| l.split(' ').nth(1) == Some("t")), "text frames");
    let out = Command::new(root().join("scripts/replay.sh"))
        .args(["--venue", "binance"])
        .arg(&capture)
        .env("SBZ_BIN", bin)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ticks = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value = serde_json::from_str(ticks.lines().next().expect("ticks")).expect("NDJSON");
    assert!(first["symbol"].is_string(), "{first}");
    let out = Command::new(root().join("scripts/replay.sh"))
        .args(["--venue", "binance", "--book", "BTCUSDT", "--depth", "3"])
        .arg(&capture)
        .env("SBZ_BIN", bin)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let book: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(book.to_string().contains("BTCUSDT"), "{book}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `scripts/setup.sh` end to end into a scratch root, as on a fresh host before any
/// secret is in place and with no Kite credentials in the caller's environment: it
/// installs the binary, the prod config and the unit, checks the config as the
/// unit's environment gives it (placeholders for the missing secret files, said so),
/// and does not enable the service. With the secret files in place it checks them and
/// enables the unit (`systemctl --root`). A broken config stops it.
#[test]
fn setup_installs_into_a_scratch_root_without_credentials() {
    let scratch = std::env::temp_dir().join(format!("sbz-setup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let setup = |extra: &[&str]| {
        let mut cmd = Command::new(root().join("scripts/setup.sh"));
        cmd.arg("--root")
            .arg(&scratch)
            .args(extra)
            .env("SBZ_BIN", env!("CARGO_BIN_EXE_stocksblitz"));
        for var in [
            "KITE_API_KEY",
            "KITE_ACCESS_TOKEN",
            "SBZ_JWT_PUBLIC_KEY",
            "SBZ_REDIS_PASSWORD",
        ] {
            cmd.env_remove(var).env_remove(format!("{var}_FILE"));
        }
        cmd.output().expect("setup.sh runs")
    };
    let wants = scratch.join("etc/systemd/system/multi-user.target.wants/stocksblitz.service");

    let out = setup(&["--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!scratch.join("opt").exists(), "--dry-run changes nothing");

    let out = setup(&[]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"), "{log}");
    for file in [
        "opt/stocksblitz/bin/stocksblitz",
        "etc/stocksblitz/prod.toml",
        "etc/systemd/system/stocksblitz.service",
    ] {
        assert!(scratch.join(file).is_file(), "{file}");
    }
    assert!(scratch.join("etc/stocksblitz/secrets").is_dir());
    assert!(
        log.contains("secrets missing") && log.contains("/etc/stocksblitz/secrets/kite-access-token"),
        "{log}"
    );
    assert!(wants.symlink_metadata().is_err(), "not enabled without its secrets");

    // The secrets in place: checked with them, and the unit enabled.
    for name in ["jwt-public.pem", "redis", "kite-api-key", "kite-access-token"] {
        std::fs::write(scratch.join("etc/stocksblitz/secrets").join(name), "value").expect("secret");
    }
    let out = setup(&[]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("secrets missing"), "{log}");
    assert!(
        log.contains(&format!(
            "KITE_API_KEY_FILE={}",
            scratch.join("etc/stocksblitz/secrets/kite-api-key").display()
        )),
        "checked with the secret files: {log}"
    );
    // A link as systemd makes it, to the unit's path inside the root.
    assert_eq!(
        std::fs::read_link(&wants).ok(),
        Some(PathBuf::from("/etc/systemd/system/stocksblitz.service")),
        "enabled: {log}"
    );

    // A config that does not check out stops the setup.
    let bad = scratch.join("bad.toml");
    std::fs::write(&bad, "[api]\nno_such_key = 1\n").expect("config");
    let out = setup(&["--config", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let _ = std::fs::remove_dir_all(scratch);
}

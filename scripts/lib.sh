# Shared by the scripts in this folder (sourced, not run).
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The repository root.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Runs the stocksblitz binary: $SBZ_BIN, else target/release/stocksblitz (built
# when missing).
sbz() {
  local bin="${SBZ_BIN:-$ROOT/target/release/stocksblitz}"
  if [ ! -x "$bin" ]; then
    log "building the release binary (cargo build --release --bin stocksblitz)"
    (cd "$ROOT" && cargo build --release --locked --bin stocksblitz >&2)
  fi
  "$bin" "$@"
}

# Root privileges for a command: itself when root, else sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

#!/usr/bin/env bash
# Sets up a fresh Debian host to run StocksBlitz under systemd: system packages, Rust
# (rustup, when cargo is missing), the release build, a `stocksblitz` system user,
# /opt/stocksblitz/bin, /etc/stocksblitz (config, secrets directory) and the hardened
# unit from systemd/. Secrets are never written: put them under /etc/stocksblitz/secrets
# yourself (see the unit file). Prints every step; --dry-run only prints.
#
# Usage: scripts/setup.sh [--dry-run] [--config FILE] [--no-enable]
#   --config FILE  the config to install as /etc/stocksblitz/prod.toml
#                  (default: configs/prod.toml)
#   --no-enable    install, but do not enable/start the service
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dry=0 enable=1 config="$ROOT/configs/prod.toml"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --no-enable) enable=0 ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -f "$config" ] || die "no config at $config"

run() {
  log "$*"
  [ "$dry" = 1 ] || "$@"
}

packages=(ca-certificates curl gcc pkg-config)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  run as_root apt-get update -qq
  run as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  run sh -c 'curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal'
  # shellcheck disable=SC1091
  [ "$dry" = 1 ] || . "$HOME/.cargo/env"
fi
run sbz --version
run sbz config check "$config"

id stocksblitz >/dev/null 2>&1 || run as_root useradd --system --home-dir /var/lib/stocksblitz --shell /usr/sbin/nologin stocksblitz
run as_root install -d -m 0755 /opt/stocksblitz/bin
run as_root install -m 0755 "${SBZ_BIN:-$ROOT/target/release/stocksblitz}" /opt/stocksblitz/bin/stocksblitz
run as_root install -d -m 0750 -o root -g stocksblitz /etc/stocksblitz
run as_root install -d -m 0750 -o stocksblitz -g stocksblitz /etc/stocksblitz/secrets
run as_root install -m 0640 -o root -g stocksblitz "$config" /etc/stocksblitz/prod.toml
run as_root install -m 0644 "$ROOT/systemd/stocksblitz.service" /etc/systemd/system/stocksblitz.service
run as_root systemctl daemon-reload
if [ "$enable" = 1 ]; then
  log "the service needs its secrets in /etc/stocksblitz/secrets (see systemd/stocksblitz.service)"
  run as_root systemctl enable --now stocksblitz
fi
log "done; status: systemctl status stocksblitz; logs: journalctl -u stocksblitz"

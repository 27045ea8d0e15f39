#!/usr/bin/env bash
# Sets up a fresh Debian host to run StocksBlitz under systemd: system packages, Rust
# (rustup, when cargo is missing), the release build, a `stocksblitz` system user,
# /opt/stocksblitz/bin, /etc/stocksblitz (config, secrets directory) and the hardened
# unit from systemd/. Secrets are never written: put them under /etc/stocksblitz/secrets
# yourself (the unit's Environment= lines name them). The config is checked with the
# environment the unit gives it; while a secret file is missing it is checked with a
# placeholder for it and the service is installed but not enabled. Prints every step;
# --dry-run only prints.
#
# Usage: scripts/setup.sh [--dry-run] [--config FILE] [--no-enable] [--root DIR]
#   --config FILE  the config to install as /etc/stocksblitz/prod.toml
#                  (default: configs/prod.toml)
#   --no-enable    install, but do not enable/start the service
#   --root DIR     install into DIR instead of / (an image or a scratch directory): no
#                  user is created, files keep the caller's ownership, and the unit is
#                  enabled with `systemctl --root` (not started)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dry=0 enable=1 config="$ROOT/configs/prod.toml" root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --no-enable) enable=0 ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    --root) root="$(realpath -m "${2:?--root needs a directory}")"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -f "$config" ] || die "no config at $config"
unit="$ROOT/systemd/stocksblitz.service"

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
bin="${SBZ_BIN:-$ROOT/target/release/stocksblitz}"

# Owner and group options for `install` (none under --root: no such user there).
own() { [ -n "$root" ] || printf '%s\n' -o "$1" -g "$2"; }
if [ -z "$root" ]; then
  id stocksblitz >/dev/null 2>&1 || run as_root useradd --system --home-dir /var/lib/stocksblitz --shell /usr/sbin/nologin stocksblitz
else
  log "--root $root: no system user is created; the unit runs as stocksblitz (create it in the image)"
fi
mapfile -t root_stocksblitz < <(own root stocksblitz)
mapfile -t stocksblitz_stocksblitz < <(own stocksblitz stocksblitz)
# Root privileges for the host's directories; none needed inside --root.
priv=(as_root)
[ -z "$root" ] || priv=()
run "${priv[@]}" install -d -m 0755 "$root/opt/stocksblitz/bin"
run "${priv[@]}" install -m 0755 "$bin" "$root/opt/stocksblitz/bin/stocksblitz"
run "${priv[@]}" install -d -m 0750 "${root_stocksblitz[@]}" "$root/etc/stocksblitz"
run "${priv[@]}" install -d -m 0750 "${stocksblitz_stocksblitz[@]}" "$root/etc/stocksblitz/secrets"
run "${priv[@]}" install -m 0640 "${root_stocksblitz[@]}" "$config" "$root/etc/stocksblitz/prod.toml"
run "${priv[@]}" install -d -m 0755 "$root/etc/systemd/system"
run "${priv[@]}" install -m 0644 "$unit" "$root/etc/systemd/system/stocksblitz.service"

# The config as the service will see it: the unit's Environment= (secret *_FILE paths)
# and nothing from this shell. A missing secret file is replaced by a placeholder value
# for the check only, and the service is not started without it.
check_env=(PATH="$PATH")
absent=()
while IFS='=' read -r var path; do
  if [ -f "$root$path" ]; then
    check_env+=("$var=$root$path")
  else
    absent+=("$path")
    check_env+=("${var%_FILE}=placeholder-for-config-check")
  fi
done < <(sed -n 's/^Environment=\([A-Z0-9_]*_FILE\)=\(.*\)$/\1=\2/p' "$unit")
run env -i "${check_env[@]}" "$bin" config check "$root/etc/stocksblitz/prod.toml"
if ((${#absent[@]})); then
  log "secrets missing (the config was checked with placeholders for them): ${absent[*]}"
  log "put each there (mode 0400, owner stocksblitz), then: systemctl enable --now stocksblitz"
  enable=0
fi

if [ -n "$root" ]; then
  if [ "$enable" = 1 ]; then run systemctl --root="$root" enable stocksblitz.service; fi
else
  run as_root systemctl daemon-reload
  if [ "$enable" = 1 ]; then run as_root systemctl enable --now stocksblitz; fi
fi
log "done; status: systemctl status stocksblitz; logs: journalctl -u stocksblitz"

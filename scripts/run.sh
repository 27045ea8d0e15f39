#!/usr/bin/env bash
# Runs StocksBlitz (release build) in the foreground: engine, feeds and API.
#
# Usage: scripts/run.sh [--config FILE] [--role all|api] [--env-file FILE]
#   --config FILE    default: the embedded configs/default.toml
#   --env-file FILE  KEY=VALUE lines exported first (secrets' *_FILE paths, overrides)
# Logs are JSON lines on stderr; stop with Ctrl-C (graceful shutdown).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=(serve)
while [ $# -gt 0 ]; do
  case "$1" in
    --config) args+=(--config "${2:?--config needs a file}"); shift ;;
    --role) args+=(--role "${2:?--role needs all or api}"); shift ;;
    --env-file)
      f="${2:?--env-file needs a file}"; shift
      [ -f "$f" ] || die "no env file at $f"
      set -a
      # shellcheck disable=SC1090
      . "$f"
      set +a
      ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
exec_bin="${SBZ_BIN:-$ROOT/target/release/stocksblitz}"
[ -x "$exec_bin" ] || sbz --version >/dev/null
exec "$exec_bin" "${args[@]}"

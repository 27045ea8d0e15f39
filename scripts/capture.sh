#!/usr/bin/env bash
# Records a live feed's raw frames to a capture file for a number of seconds, by running
# the server with `capture = FILE` added to that feed's [feeds.live] (in a scratch
# directory, on free ports, so nothing else is touched).
#
# Usage: scripts/capture.sh --feed NAME --out FILE [--seconds N] [--config FILE]
#   --feed NAME   a [[feeds]] entry with kind binance, coinbase or kite
#   --config FILE default: the embedded configs/default.toml (its feeds talk to the
#                 built-in simulator)
# Capture lines: "<recv_ts_ns> t <text frame>" or "<recv_ts_ns> b <base64 frame>".
# Replay or inspect them with scripts/replay.sh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

feed="" out="" seconds=10 config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --feed) feed="${2:?--feed needs a name}"; shift ;;
    --out) out="${2:?--out needs a file}"; shift ;;
    --seconds) seconds="${2:?--seconds needs a number}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
if [ -z "$feed" ] || [ -z "$out" ]; then die "--feed and --out are required (see --help)"; fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then die "--seconds must be a whole number >= 1"; fi
out=$(realpath -m "$out")
mkdir -p "$(dirname "$out")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -n "$config" ]; then cp "$config" "$work/config.toml"; else sbz config default >"$work/config.toml"; fi
# Insert the capture key into the named feed's [feeds.live] table.
awk -v feed="$feed" -v out="$out" '
  /^\[\[feeds\]\]/ { in_feed = 0 }
  /^name *= */ { n = $0; sub(/^name *= *"/, "", n); sub(/".*/, "", n); if (n == feed) in_feed = 1 }
  { print }
  in_feed && /^\[feeds\.live\]/ { printf "capture = \"%s\"\n", out; done = 1; in_feed = 0 }
  END { if (!done) exit 3 }
' "$work/config.toml" >"$work/capture.toml" || die "no feed named $feed with a [feeds.live] table in the config"

log "capturing feed $feed for ${seconds}s into $out"
(
  cd "$work"
  STOCKSBLITZ_API_LISTEN=127.0.0.1:0 STOCKSBLITZ_SIMULATOR_LISTEN=127.0.0.1:0 \
    STOCKSBLITZ_LOG_LEVEL=warn \
    timeout -s INT "$seconds" "${SBZ_BIN:-$ROOT/target/release/stocksblitz}" serve --config capture.toml
) || [ $? = 124 ] || true
[ -s "$out" ] || die "nothing was captured (is the feed connected? see the log above)"
log "$(wc -l <"$out") frames in $out"

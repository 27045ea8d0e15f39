#!/usr/bin/env bash
# Replays a capture file through the venue's real parser and book rules.
#
# Usage: scripts/replay.sh --venue binance|coinbase|kite CAPTURE            ticks as NDJSON
#        scripts/replay.sh --venue binance|coinbase --book SYMBOL [--depth N] CAPTURE
#                                                       the final book, gaps and resyncs
# To feed a capture into a running engine instead, use a [[feeds]] entry with
# kind = "replay" ([feeds.replay] path, venue, speed = "original" | "max" | "2x").
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

venue="" book="" depth=10 capture=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venue) venue="${2:?--venue needs a name}"; shift ;;
    --book) book="${2:?--book needs a symbol}"; shift ;;
    --depth) depth="${2:?--depth needs a number}"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) die "unknown argument $1 (see --help)" ;;
    *) capture="$1" ;;
  esac
  shift
done
if [ -z "$venue" ] || [ -z "$capture" ]; then die "--venue and a capture file are required (see --help)"; fi
[ -f "$capture" ] || die "no capture file at $capture"
if [ -n "$book" ]; then
  sbz feed book --venue "$venue" --symbol "$book" --depth "$depth" "$capture"
else
  sbz feed parse --venue "$venue" "$capture"
fi

#!/usr/bin/env bash
# The whole-system soak (api/tests/soak.rs): the real binary with a real Redis and ILP
# server, algo and UI clients, and a seeded schedule of feed, process, store and disk
# faults; the invariants are checked during and after the run. A failure prints the seed
# and the first violating event; rerun with that --seed to replay the schedule.
#
# Usage: scripts/soak.sh [--minutes N] [--seed S] [--debug]
#   --minutes N  length of the run (default 60)
#   --seed S     replay a seed (default: a fixed seed, then a random one)
#   --debug      a debug build (faster to build, slower to run; default: release)
# Needs redis-server and victoria-metrics (scripts/test.sh installs both) and root for
# the journal's tmpfs (without it the disk-full spells are skipped). The summary (faults
# injected, orders, events and rows checked) goes to target/soak/soak-<UTC time>.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

minutes=60 seed="" profile=(--release)
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="${2:?--minutes needs a number}"; shift ;;
    --seed) seed="${2:?--seed needs a number}"; shift ;;
    --debug) profile=() ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
case "$minutes" in ''|*[!0-9]*) die "--minutes must be a whole number, got $minutes" ;; esac
command -v redis-server >/dev/null || die "redis-server not found (scripts/test.sh installs it)"
command -v victoria-metrics >/dev/null || die "victoria-metrics not found (scripts/test.sh installs it)"

cd "$ROOT"
mkdir -p target/soak
out="target/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
export SOAK_SECONDS=$((minutes * 60))
if [ -n "$seed" ]; then export SOAK_SEED="$seed"; fi
log "soak: ${minutes} min${seed:+, seed $seed}; log in $out"
cargo test "${profile[@]}" --locked -p stocksblitz-api --test soak -- --nocapture 2>&1 | tee "$out"

#!/usr/bin/env bash
# Runs the benchmarks and records the results with the machine and the exact command:
# target/bench/run-<UTC time>.md always; with --append, also a dated section at the end
# of BENCHMARKS.md ("Recorded runs") to curate from.
#
# Usage: scripts/bench.sh [--bench NAME]... [--append] [--quick]
#   --bench NAME  one bench (repeatable): ring_handoff, book, fixed_parse, pipeline,
#                 feed_parse, orders, journal, sink, surveillance, fanout (default: all)
#   --quick       BENCH_QUICK=1 smoke run (numbers not meaningful; never appended)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

benches=() append=0 quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bench) benches+=(--bench "${2:?--bench needs a name}"); shift ;;
    --append) append=1 ;;
    --quick) quick=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

cd "$ROOT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out_dir=target/bench
mkdir -p "$out_dir"
out="$out_dir/run-$stamp.md"
cmd=(cargo bench -p stocksblitz-benches --locked "${benches[@]}")
env_prefix=""
if [ "$quick" = 1 ]; then
  export BENCH_QUICK=1
  env_prefix="BENCH_QUICK=1 "
fi
log "$env_prefix${cmd[*]}"
raw="$out_dir/run-$stamp.raw"
"${cmd[@]}" | tee "$raw"

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
{
  echo "### Run $(date -u +%Y-%m-%d) ($stamp)"
  echo
  echo "Machine: $(nproc) cores${cpu:+ ($cpu)}, ${mem:-? RAM}, $(uname -sr), $(rustc --version 2>/dev/null)."
  echo "Command: \`$env_prefix${cmd[*]}\`"
  # The benches print Markdown: keep their section titles (demoted) and tables.
  sed -n -e 's/^## /#### /p' -e '/^|/p' "$raw"
  echo
} >"$out"
log "results: $out"

if [ "$append" = 1 ]; then
  [ "$quick" = 0 ] || die "--quick numbers are not meaningful: not appending"
  grep -q '^## Recorded runs' BENCHMARKS.md || printf '\n## Recorded runs\n\nRaw output of scripts/bench.sh --append, newest last.\n\n' >>BENCHMARKS.md
  cat "$out" >>BENCHMARKS.md
  log "appended to BENCHMARKS.md"
fi

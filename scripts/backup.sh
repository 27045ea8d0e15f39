#!/usr/bin/env bash
# Backs up a node's durable state while the server runs: the order journal (snapshots,
# segments, archive/) and the audit log, into a new directory, then checks the copy
# with `stocksblitz journal verify` and `stocksblitz audit verify`. --restore puts a
# backup back into empty places (stop the server first; README "Operations").
#
# Usage: scripts/backup.sh --journal DIR --audit FILE --out DIR [--config FILE]
#        scripts/backup.sh --restore BACKUP --journal DIR --audit FILE
#   --journal DIR  the [orders.journal] dir (prod: /var/lib/stocksblitz/journal)
#   --audit FILE   the [audit] path (prod: /var/lib/stocksblitz/audit.log)
#   --out DIR      where the backup goes (must not exist yet)
#   --config FILE  also replay the copy through the order manager (journal verify --config)
#   --restore DIR  copy a backup made by this script to --journal and --audit, which must be
#                  empty or absent, and verify it there
# The checks run $SBZ_BIN (on a host: SBZ_BIN=/opt/stocksblitz/bin/stocksblitz), else the
# repository's target/release/stocksblitz.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

journal="" audit="" out="" config="" restore=""
while [ $# -gt 0 ]; do
  case "$1" in
    --journal) journal="${2:?--journal needs a directory}"; shift ;;
    --audit) audit="${2:?--audit needs a file}"; shift ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    --restore) restore="${2:?--restore needs a backup directory}"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -n "$journal" ] || die "--journal DIR is required (the [orders.journal] dir)"
[ -n "$audit" ] || die "--audit FILE is required (the [audit] path)"

# Checks a journal copy and an audit log copy; prints the tools' JSON summaries.
check() {
  local j="$1" a="$2"
  if [ -n "$config" ]; then
    sbz journal verify "$j" --config "$config" >"$3/journal-verify.json"
  else
    sbz journal verify "$j" >"$3/journal-verify.json"
  fi
  if [ -f "$a" ]; then sbz audit verify "$a" >"$3/audit-verify.json"; fi
}

if [ -n "$restore" ]; then
  [ -d "$restore/journal" ] || die "$restore is not a backup made by scripts/backup.sh (no journal/)"
  if [ -d "$journal" ] && [ -n "$(ls -A "$journal")" ]; then
    die "$journal is not empty: restore into an empty directory (move the old one aside first)"
  fi
  [ ! -e "$audit" ] || die "$audit exists: move it aside first"
  log "restoring the journal into $journal"
  mkdir -p "$journal"
  cp -a "$restore/journal/." "$journal/"
  if [ -f "$restore/audit.log" ]; then
    log "restoring the audit log to $audit"
    mkdir -p "$(dirname "$audit")"
    cp -a "$restore/audit.log" "$audit"
  fi
  tmp="$(mktemp -d)"
  check "$journal" "$audit" "$tmp"
  cat "$tmp/journal-verify.json"
  rm -rf "$tmp"
  log "restored; start the server (it continues the journal and the audit chain)"
  exit 0
fi

[ -n "$out" ] || die "--out DIR is required"
out="$(realpath -m "$out")"
[ -d "$journal" ] || die "no journal directory at $journal"
[ ! -e "$out" ] || die "$out exists: back up into a new directory"
mkdir -p "$out/journal"

# 1. Snapshots first: each is renamed into place whole, and taken at a record that was
#    durable then, so the segments copied after it reach it.
shopt -s nullglob
for f in "$journal"/snapshot-*.sbzs; do
  cp -p "$f" "$out/journal/" 2>/dev/null || log "snapshot $f went away meanwhile (pruned): skipped"
done
# 2. Segments, oldest first. Only the newest is still growing: its copy is a prefix of it,
#    whose last record may be cut (the engine cuts such a torn tail at start-up; it was
#    not in the copy's snapshot). A segment retention moved meanwhile is in archive/.
gone=""
for f in "$journal"/*.sbzj; do
  if ! cp -p "$f" "$out/journal/" 2>/dev/null; then
    log "segment $f went away meanwhile (retention: no kept snapshot needs it)"
    gone="$(basename "$f")"
  fi
done
# 3. Segments retention archived (after the main directory, so none is missed).
if [ -d "$journal/archive" ]; then
  mkdir -p "$out/journal/archive"
  for f in "$journal"/archive/*.sbzj; do
    cp -p "$f" "$out/journal/archive/"
  done
  for f in "$out"/journal/archive/*.sbzj; do
    # A segment copied from both places: the main directory's copy is the one used.
    [ ! -e "$out/journal/$(basename "$f")" ] || rm -f "$f"
  done
fi
# A segment moved to archive/ between listing and copying leaves a hole in the main
# copy when an older one was copied before it moved: put such segments back.
main=("$out"/journal/*.sbzj)
if ((${#main[@]})); then
  first="$(basename "${main[0]}")"
  for f in "$out"/journal/archive/*.sbzj; do
    if [[ "$(basename "$f")" > "$first" ]]; then mv "$f" "$out/journal/"; fi
  done
fi
# Retention that deleted (not archived) segments meanwhile: the copies of segments older
# than one that went away are not needed either, and would leave a hole.
if [ -n "$gone" ] && [ ! -e "$out/journal/$gone" ]; then
  for f in "$out"/journal/*.sbzj; do
    if [[ "$(basename "$f")" < "$gone" ]]; then rm -f "$f"; fi
  done
fi
# 4. The audit log: append-only JSON lines. A line being written while copied is cut
#    (the server cuts a torn last line at start-up the same way).
if [ -f "$audit" ]; then
  cp -p "$audit" "$out/audit.log"
  lines="$(wc -l <"$out/audit.log")"
  if [ "$(grep -c '' "$out/audit.log")" != "$lines" ]; then
    head -n "$lines" "$out/audit.log" >"$out/audit.log.tmp"
    mv "$out/audit.log.tmp" "$out/audit.log"
    log "cut a torn last audit line (written while copying)"
  fi
else
  log "no audit log at $audit: not backed up"
fi
check "$out/journal" "$out/audit.log" "$out"
(cd "$out" && find . -type f -print0 | sort -z | xargs -0 sha256sum >"$out.sha256" && mv "$out.sha256" SHA256SUMS)
log "backup in $out: $(grep -o '"records": [0-9]*' "$out/journal-verify.json" || true), journal and audit log verified"

#!/usr/bin/env bash
# Host tuning for low latency. By default prints what it finds and what it would
# change; --apply makes the runtime changes (as root). Boot-time settings (isolated
# cores) are printed as the kernel command line to add, never edited for you.
#
# Usage: scripts/tune-host.sh [--cores LIST] [--apply]
#   --cores LIST  cores for the engine and feed threads (default 1; e.g. 1-3 or 1,2)
#                 IRQs and housekeeping go to the other cores.
# Checks: isolcpus/nohz_full/rcu_nocbs, CPU frequency governor, IRQ affinity and
# irqbalance, transparent huge pages, vm.swappiness, the memlock limit.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cores=1 apply=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) cores="${2:?--cores needs a list}"; shift ;;
    --apply) apply=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

# Expands "1-3,5" into "1 2 3 5".
expand() {
  local out=() part a b
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
      for ((i = a; i <= b; i++)); do out+=("$i"); done
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      out+=("$part")
    else
      die "--cores: $part is not a core or range"
    fi
  done
  echo "${out[*]}"
}
read -ra fast <<<"$(expand "$cores")"
ncpu=$(nproc --all)
house=()
for ((c = 0; c < ncpu; c++)); do
  [[ " ${fast[*]} " == *" $c "* ]] || house+=("$c")
done
for c in "${fast[@]}"; do ((c < ncpu)) || die "core $c does not exist (this host has $ncpu)"; done
((${#house[@]})) || die "--cores $cores leaves no core for the OS and IRQs"
house_list=$(IFS=,; echo "${house[*]}")

changes=0
ok() { printf 'ok       %s\n' "$*"; }
change() { printf 'change   %s\n' "$*"; changes=$((changes + 1)); }
note() { printf 'note     %s\n' "$*"; }

# Writes $2 to file $1 with --apply (reporting failures, never stopping).
put() {
  if [ "$apply" = 1 ]; then
    if printf '%s' "$2" | as_root tee "$1" >/dev/null 2>&1; then
      printf '         applied: %s <- %s\n' "$1" "$2"
    else
      printf '         could not write %s\n' "$1"
    fi
  fi
}

echo "host: $ncpu cores; engine/feed cores: ${fast[*]}; housekeeping and IRQs: ${house[*]}"

cmdline=$(cat /proc/cmdline 2>/dev/null || true)
isolated=$(cat /sys/devices/system/cpu/isolated 2>/dev/null || true)
if [ -n "$isolated" ] && [ "$(expand "$isolated")" = "${fast[*]}" ]; then
  ok "isolated cores: $isolated"
else
  change "isolated cores are '${isolated:-none}': add to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot):"
  printf '         isolcpus=%s nohz_full=%s rcu_nocbs=%s\n' "$cores" "$cores" "$cores"
fi
[[ "$cmdline" == *nohz_full=* ]] || note "nohz_full is not set (tickless engine cores)"

for c in "${fast[@]}"; do
  f=/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor
  if [ ! -r "$f" ]; then
    note "cpu$c: no cpufreq governor exposed (a VM, or fixed frequency)"
  elif [ "$(cat "$f")" = performance ]; then
    ok "cpu$c governor: performance"
  else
    change "cpu$c governor: $(cat "$f") -> performance"
    put "$f" performance
  fi
done

if systemctl is-active --quiet irqbalance 2>/dev/null; then
  change "irqbalance is running: it would move IRQs back onto engine cores; stop and disable it"
  if [ "$apply" = 1 ]; then as_root systemctl disable --now irqbalance || true; fi
else
  ok "irqbalance not running"
fi
moved=0 stuck=0
for d in /proc/irq/[0-9]*; do
  f=$d/smp_affinity_list
  [ -r "$f" ] || continue
  cur=$(cat "$f")
  [ "$cur" = "$house_list" ] && continue
  if [ "$(expand "$cur" 2>/dev/null)" != "" ]; then
    overlap=0
    for c in $(expand "$cur"); do [[ " ${fast[*]} " == *" $c "* ]] && overlap=1; done
    [ "$overlap" = 1 ] || continue
  fi
  if [ "$apply" = 1 ]; then
    if printf '%s' "$house_list" | as_root tee "$f" >/dev/null 2>&1; then moved=$((moved + 1)); else stuck=$((stuck + 1)); fi
  else
    moved=$((moved + 1))
  fi
done
if [ "$moved" = 0 ] && [ "$stuck" = 0 ]; then
  ok "no IRQ is routed to an engine core"
else
  extra=""
  [ "$stuck" = 0 ] || extra=" ($stuck could not be moved)"
  change "$moved IRQs routed to engine cores -> $house_list$extra"
fi

thp=/sys/kernel/mm/transparent_hugepage/enabled
if [ -r "$thp" ]; then
  if grep -q '\[never\]\|\[madvise\]' "$thp"; then
    ok "transparent huge pages: $(grep -o '\[[a-z]*\]' "$thp")"
  else
    change "transparent huge pages: always -> madvise (no khugepaged stalls)"
    put "$thp" madvise
  fi
fi

swappiness=$(cat /proc/sys/vm/swappiness 2>/dev/null || echo "?")
if [ "$swappiness" = 1 ] || [ "$swappiness" = 0 ]; then
  ok "vm.swappiness: $swappiness"
else
  change "vm.swappiness: $swappiness -> 1"
  put /proc/sys/vm/swappiness 1
fi

memlock=$(ulimit -l)
if [ "$memlock" = unlimited ]; then
  ok "memlock limit: unlimited"
else
  note "memlock limit here is $memlock KiB; the systemd unit sets LimitMEMLOCK=infinity for the service"
fi

if [ "$apply" = 1 ]; then
  echo "applied the runtime changes above; runtime settings do not survive a reboot (persist them with sysctl.d/tuned)"
else
  echo "$changes change(s) suggested; run with --apply to make the runtime ones"
fi

#!/bin/bash
# bench/tracking-overhead.sh [BUILD]: the relay benchmark (../shared/bench/
# relay-bench.sh: smtp-source -> relay -> smtp-sink) against stock Postfix,
# posternd with message tracking on (the default) and posternd with
# tracking = no, in alternating rounds of one run (ROUNDS, default 3; the
# machines are noisy). Prints each round and the median ratio on/off (the
# goal is >= 0.95) and each against Postfix. Needs root (it configures the
# system Postfix via shared/bench/postfix-relay.sh).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-5000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
PF_PORT=2535; ON_PORT=2545; OFF_PORT=2555; SINK_PORT=2526
[ -x "$SHARED/relay-bench.sh" ] || { echo "no $SHARED/relay-bench.sh"; exit 1; }
WORK=$(mktemp -d /var/tmp/postern-bench.XXXXXX)   # same disk as /var/spool/postfix
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; postfix stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

. bench/lib.sh
postern_conf $ON_PORT $SINK_PORT "$WORK/on" "worker_threads = ${WORKERS:-4}" "tracking = yes" >"$WORK/on.conf"
postern_conf $OFF_PORT $SINK_PORT "$WORK/off" "worker_threads = ${WORKERS:-4}" "tracking = no" >"$WORK/off.conf"
PF_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$SHARED/postfix-relay.sh" >/dev/null
for which in on off; do
  "$BUILD/posternd" -c "$WORK/$which.conf" 2>"$WORK/$which.log" & PIDS+=($!)
done
sleep 0.5
for p in "${PIDS[@]}"; do kill -0 "$p" || { cat "$WORK"/*.log; exit 1; }; done

mps() { sed -n "s/.*e2e_mps=\([0-9.]*\).*/\1/p"; }
ratios=()
printf "%-6s %10s %10s %10s %10s %10s\n" round postfix on off on/off on/postfix
for r in $(seq 1 "$ROUNDS"); do
  pf=$(bash "$SHARED/relay-bench.sh" $PF_PORT "$N" "$S" "$SIZE" $SINK_PORT | mps)
  if [ $((r % 2)) -eq 1 ]; then     # alternate which posternd goes first
    on=$(bash "$SHARED/relay-bench.sh" $ON_PORT "$N" "$S" "$SIZE" $SINK_PORT | mps)
    off=$(bash "$SHARED/relay-bench.sh" $OFF_PORT "$N" "$S" "$SIZE" $SINK_PORT | mps)
  else
    off=$(bash "$SHARED/relay-bench.sh" $OFF_PORT "$N" "$S" "$SIZE" $SINK_PORT | mps)
    on=$(bash "$SHARED/relay-bench.sh" $ON_PORT "$N" "$S" "$SIZE" $SINK_PORT | mps)
  fi
  [ -n "$pf" ] && [ -n "$on" ] && [ -n "$off" ] || { echo "a run failed"; exit 1; }
  ratio=$(echo "$on / $off" | bc -l)
  ratios+=("$ratio")
  printf "%-6s %10s %10s %10s %10.2f %10.2f\n" "$r" "$pf" "$on" "$off" "$ratio" "$(echo "$on / $pf" | bc -l)"
done
median=$(printf "%s\n" "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
events=$(sqlite3 "$WORK/on/tracking.db" "SELECT COUNT(*) FROM events" 2>/dev/null || echo "?")
printf "median on/off: %.2f (goal >= 0.95); events recorded with tracking on: %s\n" "$median" "$events"

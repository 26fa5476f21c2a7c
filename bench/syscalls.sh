#!/bin/bash
# bench/syscalls.sh [BUILD...]: the system calls posternd makes per relayed
# message during the shared relay benchmark (N messages of SIZE bytes over S
# sessions), for each build given (default: build), ROUNDS times alternating
# (default 2). On this VM every system call costs dearly (the kernel is 75%
# of posternd's profile), and unlike a rate the count does not swing between
# rounds: it is the figure to compare builds by.
# Each round: perf stat's tracepoints count every call, fsync and futex,
# and the context switches, at little cost (the rate is printed beside
# them); then, with STRACE=1, a run under strace -c -f gives the calls by
# name (strace slows posternd down: no rate from that run).
# CONF adds config lines (one per line), e.g. CONF="plugins = size_limit".
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-3000}; ROUNDS=${ROUNDS:-2}
relay_bench_start syscalls
extra=()
[ -n "${CONF:-}" ] && mapfile -t extra <<<"$CONF"
builds=("${@:-build}")
echo "system calls per message ($N messages of $SIZE bytes, $S sessions); rate in messages/s"
for round in $(seq "$ROUNDS"); do
  for BUILD in "${builds[@]}"; do
    relay_start "${extra[@]}"
    perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_fsync,syscalls:sys_enter_futex,context-switches \
      -p "$(daemon_pid "$PG")" -o "$WORK/perf" & perf=$!
    sleep 0.3
    rate=$(bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT | sed -n 's/.*e2e_mps=\([0-9]*\).*/\1/p')
    kill -INT $perf; wait $perf 2>/dev/null || true
    stop_posternd
    printf "round %s %-24s rate %5s  %s\n" "$round" "$BUILD" "$rate" "$(awk -F, -v n="$N" '$1 ~ /^[0-9]+$/ {
      name = $3; sub(/^raw_syscalls:sys_enter$/, "all", name); sub(/^syscalls:sys_enter_/, "", name)
      printf "%s %.2f  ", name, $1 / n }' "$WORK/perf")"
    if [ -n "${STRACE:-}" ]; then
      relay_start "${extra[@]}"
      strace_start "$PG" "$WORK/strace"
      bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT >/dev/null
      strace_stop
      stop_posternd
      echo "  by name (strace -c):"
      syscalls_per_msg "$WORK/strace" "$N" "${TOP:-12}"
    fi
  done
done

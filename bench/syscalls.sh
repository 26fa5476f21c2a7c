#!/bin/bash
# bench/syscalls.sh [BUILD...]: the system calls posternd makes per relayed
# message, counted by strace -c on the daemon and all its threads during the
# shared relay benchmark (N messages of SIZE bytes, S sessions), for each
# build given (default: build). On this VM every system call costs dearly
# (the kernel is 75% of posternd's profile), and unlike a rate the count does
# not swing between rounds: it is the figure to compare builds by. CONF adds
# config lines (one per line), e.g. CONF="plugins = size_limit". strace slows
# posternd down: the rate printed is not a benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-2000}
relay_bench_start syscalls
extra=()
[ -n "${CONF:-}" ] && mapfile -t extra <<<"$CONF"
for BUILD in "${@:-build}"; do
  relay_start "${extra[@]}"
  strace_start "$PG" "$WORK/strace"
  bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT >/dev/null
  strace_stop
  kill "$PG"; wait "$PG" 2>/dev/null || true; PG=""
  echo "$BUILD: system calls per message ($N messages of ${SIZE} bytes, $S sessions)"
  syscalls_per_msg "$WORK/strace" "$N" "${TOP:-12}"
done

#!/bin/bash
# bench/relay-vs-postfix.sh [BUILD] [--plugins]: the shared relay benchmark
# (../shared/bench/relay-bench.sh: smtp-source -> relay -> smtp-sink) run
# against stock Postfix and against posternd in the same run, for 4 KiB and
# 100 KiB messages over 20 sessions. Prints both and the ratio posternd/Postfix
# (>1 means posternd is faster). fsync-before-250 stays on in posternd.
# With --plugins, posternd runs size_limit + header_checks + archive (every
# message journaled and fsync'd) while Postfix stays stock.
# Needs root (it configures the system Postfix via shared/bench/postfix-relay.sh).
set -euo pipefail
BUILD=${1:-build}
WITH_PLUGINS=${2:-}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-5000}; S=${S:-20}; SIZES=${SIZES:-"4096 102400"}
PF_PORT=2535; PG_PORT=2545; SINK_PORT=2526
[ -x "$SHARED/relay-bench.sh" ] || { echo "no $SHARED/relay-bench.sh"; exit 1; }
WORK=$(mktemp -d /var/tmp/postern-bench.XXXXXX)   # same disk as /var/spool/postfix
chmod 755 "$WORK"                                  # the daemon's user reaches its spool in it
PG=""
cleanup() { [ -n "$PG" ] && kill "$PG" 2>/dev/null; postfix stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

. bench/lib.sh
postern_conf $PG_PORT $SINK_PORT "$WORK/spool" "worker_threads = ${WORKERS:-4}" >"$WORK/postern.conf"
if [ "$WITH_PLUGINS" = "--plugins" ]; then
  mkdir -p "$WORK/archive" && chmod 777 "$WORK/archive" "$WORK"
  printf '/^Subject:.*viagra/i REJECT no spam\n/^X-Spam-Flag: YES/ DISCARD\n/^X-Secret:/ IGNORE\n' >"$WORK/header_checks"
  chmod 644 "$WORK/header_checks"
  cat >>"$WORK/postern.conf" <<CONF
plugin_dir = $(pwd)/$BUILD/plugins
plugins = size_limit, header_checks, archive
size_limit.max = 10M
header_checks.rules = $WORK/header_checks
archive.dir = $WORK/archive
CONF
  echo "posternd plugins: size_limit, header_checks, archive"
fi

PF_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$SHARED/postfix-relay.sh" >/dev/null
"$BUILD/posternd" -c "$WORK/postern.conf" 2>"$WORK/posternd.log" & PG=$!
sleep 0.5
kill -0 $PG || { cat "$WORK/posternd.log"; exit 1; }

mps() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
printf "%-8s %-10s %12s %12s %12s %12s\n" size server accept_mps e2e_mps ratio_accept ratio_e2e
for size in $SIZES; do
  pf=$(bash "$SHARED/relay-bench.sh" $PF_PORT "$N" "$S" "$size" $SINK_PORT)
  pg=$(bash "$SHARED/relay-bench.sh" $PG_PORT "$N" "$S" "$size" $SINK_PORT)
  pfa=$(echo "$pf" | mps accept_mps); pfe=$(echo "$pf" | mps e2e_mps)
  pga=$(echo "$pg" | mps accept_mps); pge=$(echo "$pg" | mps e2e_mps)
  [ -n "$pfe" ] && [ -n "$pge" ] || { echo "postfix: $pf"; echo "posternd: $pg"; exit 1; }
  printf "%-8s %-10s %12s %12s\n" "$size" postfix "$pfa" "$pfe"
  printf "%-8s %-10s %12s %12s %12.2f %12.2f\n" "$size" posternd "$pga" "$pge" \
    "$(echo "$pga / $pfa" | bc -l)" "$(echo "$pge / $pfe" | bc -l)"
done

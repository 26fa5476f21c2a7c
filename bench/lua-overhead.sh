#!/bin/bash
# bench/lua-overhead.sh [BUILD]: the shared relay benchmark against posternd
# without Lua and with bench/trivial.lua (a do-nothing handler on all nine
# stages), alternating ROUNDS times in one run. Prints both and the overhead
# (1 - with/without) of the end-to-end rate.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-5000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
PORT=2545; SINK_PORT=2526
. bench/lib.sh
WORK=$(mktemp -d /var/tmp/postern-luabench.XXXXXX)
chmod 755 "$WORK"
PG=""
cleanup() { [ -n "$PG" ] && kill "$PG" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

run() {   # $1 = extra config line or ""
  rm -rf "$WORK/spool"
  postern_conf $PORT $SINK_PORT "$WORK/spool" "$1" >"$WORK/c.conf"
  "$BUILD/posternd" -c "$WORK/c.conf" 2>"$WORK/log" & PG=$!
  sleep 0.5
  bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT | sed -n 's/.*e2e_mps=\([0-9]*\).*/\1/p'
  kill $PG; wait $PG 2>/dev/null || true; PG=""
}

without=0; with=0
for r in $(seq "$ROUNDS"); do
  a=$(run "")
  b=$(run "${WITH:-plugins = lua:$(pwd)/bench/trivial.lua}")   # WITH= another chain, e.g. a C plugin
  echo "round $r: without_lua_e2e_mps=$a with_lua_e2e_mps=$b"
  without=$((without + a)); with=$((with + b))
done
awk -v a="$without" -v b="$with" 'BEGIN { printf "total: without=%d with=%d ratio=%.3f overhead=%.1f%%\n", a, b, b/a, (1-b/a)*100 }'

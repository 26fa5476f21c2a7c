#!/bin/bash
# bench/shared-state.sh [BUILD]: one node with its policy state in Redis vs
# the same node with local state, alternating ROUNDS times (default 3) in
# one run. The chain: policies/rate_limit.lua (postern.incr per MAIL, a
# limit never reached) and greylist with the client already whitelisted
# (a lookup per RCPT): local = in-process counters and greylist's SQLite,
# shared = redis_server and greylist.store = shared. smtp-source connects
# from 127.0.0.1, which is made untrusted here so greylisting runs. Prints
# the end-to-end rates and their ratio (shared/local).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-5000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
PORT=2545; SINK_PORT=2526; REDIS_PORT=6390
TRUSTED=10.255.255.0/24
. bench/lib.sh
WORK=$(mktemp -d /var/tmp/postern-kvbench.XXXXXX)
chmod 777 "$WORK"
PG=""; RD=""
cleanup() { [ -n "$PG" ] && kill "$PG" 2>/dev/null; [ -n "$RD" ] && kill "$RD" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
RD=$!
sleep 0.5

run() {   # $1 = local | shared
  rm -rf "$WORK/spool" "$WORK/grey.sqlite"
  local extra=("plugin_dir = $(pwd)/$BUILD/plugins" "plugins = lua:$(pwd)/policies/rate_limit.lua, greylist"
               "rate_limit.max = 100000000" "greylist.delay = 0" "greylist.auto_whitelist = 1")
  if [ "$1" = shared ]; then
    extra+=("redis_server = 127.0.0.1:$REDIS_PORT" "greylist.store = shared")
    redis-cli -p $REDIS_PORT flushall >/dev/null
  else
    extra+=("greylist.db = $WORK/grey.sqlite")
  fi
  relay_start "${extra[@]}"
  # whitelist the client: greylisted once, passed once
  for _ in 1 2; do smtp-source -m 1 -f a@src.test -t r@dest.test 127.0.0.1:$PORT >/dev/null 2>&1 || true; done
  sleep 0.3
  relay_measure      # messages/s end to end, and posternd's CPU in microseconds per message
  # the shared run really went through Redis: the sender's counter
  [ "$1" = shared ] && echo "  redis: rate counter $(redis-cli -p $REDIS_PORT get postern:lua:rate:sender@bench.test)," \
    "greylist keys $(redis-cli -p $REDIS_PORT --scan --pattern 'postern:c:greylist:*' | wc -l)" >&2
  return 0
}

ratios=(); cpus=()
for r in $(seq "$ROUNDS"); do
  read -r a acpu < <(run local)
  read -r b bcpu < <(run shared)
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", b/a}')
  cpu=$(awk -v a="$acpu" -v b="$bcpu" 'BEGIN{printf "%.3f", b/a}')
  echo "round $r: local_e2e_mps=$a shared_e2e_mps=$b ratio=$ratio cpu_us_per_msg local=$acpu shared=$bcpu (x$cpu)"
  ratios+=("$ratio"); cpus+=("$cpu")
done
echo "median: shared/local e2e ratio=$(median "${ratios[@]}") posternd cpu per message x$(median "${cpus[@]}")"

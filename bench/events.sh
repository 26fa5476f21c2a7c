#!/bin/bash
# bench/events.sh [BUILD]: the shared relay benchmark against posternd as
# it comes, and with the event stream on: every event to an HTTPS webhook
# (bench/webhook_receiver.py, signed) and to a Redis stream (a private
# redis-server), alternating ROUNDS times (default 3) in one run. Prints
# each round and the medians of the end-to-end rate and posternd's CPU per
# message, events on against off (issue 39's goal: rate >= 0.95). The
# RabbitMQ sink of the issue is not built, so it is not measured.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. bench/lib.sh
relay_bench_start events
HOOK_PORT=2547; REDIS_PORT=2548
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/hook.key" -out "$WORK/hook.crt" -days 2 \
  -subj /CN=hook -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
echo "bench-secret" >"$WORK/secret"
chmod 644 "$WORK/hook.key" "$WORK/hook.crt" "$WORK/secret"
python3 bench/webhook_receiver.py 127.0.0.1 $HOOK_PORT "$WORK/hook.crt" "$WORK/hook.key" & HOOK=$!
redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$WORK" >/dev/null & REDIS=$!
trap 'kill $HOOK $REDIS 2>/dev/null; if [ -n "$PG" ]; then kill "$PG" 2>/dev/null; fi; rm -rf "$WORK"' EXIT
cat >"$WORK/sinks" <<TABLE
webhook hook https://127.0.0.1:$HOOK_PORT/events secret=$WORK/secret ca=$WORK/hook.crt
redis stream maxlen=100000
TABLE
chmod 644 "$WORK/sinks"
sleep 1

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }'; }
rates=(); cpus=()
for r in $(seq "$ROUNDS"); do
  read -r off off_cpu < <(relay_round)
  read -r on on_cpu < <(relay_round "event_sinks = file:$WORK/sinks" "redis_server = 127.0.0.1:$REDIS_PORT")
  echo "round $r: e2e_mps off=$off on=$on ($(ratio "$off" "$on")); cpu_us_per_msg off=$off_cpu on=$on_cpu"
  rates+=("$(ratio "$off" "$on")"); cpus+=("$(ratio "$off_cpu" "$on_cpu")")
done
echo "median rate on/off: $(median "${rates[@]}"); median posternd CPU per message on/off: x$(median "${cpus[@]}")"

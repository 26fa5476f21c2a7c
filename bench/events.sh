#!/bin/bash
# bench/events.sh [BUILD]: the shared relay benchmark against posternd as
# it comes, and with the event stream on: every event to an HTTPS webhook
# (bench/webhook_receiver.py, signed; it keeps connections open unless
# HOOK_CLOSE=1) and to RabbitMQ (a private rabbitmq-server, publisher
# confirms), the two sinks issue 39's benchmark names; SINKS="webhook amqp
# redis" adds a Redis stream (a private redis-server). Alternates ROUNDS
# times (default 3) in one run. Prints each round and the medians of the
# end-to-end rate and posternd's CPU per message, events on against off
# (issue 39's goal: rate >= 0.95). The receivers share the machine's two
# cores with posternd: their CPU per message is printed per round. AMQP_FORMAT=each publishes a message per event
# (default ndjson: a message per batch).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-20000}      # rounds of 5,000 last 3 s, as long as this VM's swings; a broker's costs show in longer ones
relay_bench_start events
HOOK_PORT=2547; REDIS_PORT=2548; AMQP_PORT=2549
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/hook.key" -out "$WORK/hook.crt" -days 2 \
  -subj /CN=hook -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
echo "bench-secret" >"$WORK/secret"
chmod 644 "$WORK/hook.key" "$WORK/hook.crt" "$WORK/secret"
python3 bench/webhook_receiver.py 127.0.0.1 $HOOK_PORT "$WORK/hook.crt" "$WORK/hook.key" & HOOK=$!
redis-server --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no --dir "$WORK" >/dev/null & REDIS=$!
echo "[]." >"$WORK/plugins"
HOME=$WORK RABBITMQ_NODENAME=postern-bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$AMQP_PORT \
  RABBITMQ_DIST_PORT=25549 RABBITMQ_MNESIA_BASE=$WORK/mnesia RABBITMQ_LOG_BASE=$WORK/rlog \
  RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/plugins RABBITMQ_CONFIG_FILE=$WORK/none RABBITMQ_ADVANCED_CONFIG_FILE=$WORK/none2 \
  setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$WORK/rabbit.log" 2>&1 & RABBIT=$!
trap 'kill $HOOK $REDIS ${CONSUMER:-} 2>/dev/null; kill -9 -- -$RABBIT 2>/dev/null; if [ -n "$PG" ]; then kill "$PG" 2>/dev/null; fi; rm -rf "$WORK"' EXIT
for _ in $(seq 60); do (echo >/dev/tcp/127.0.0.1/$AMQP_PORT) 2>/dev/null && break; sleep 0.5; done
amqp-declare-queue -s 127.0.0.1 --port $AMQP_PORT -d -q postern.events >/dev/null
# a consumer takes what arrives, as in a real deployment: a queue nobody
# reads grows round after round, and the broker's work with it (it took
# ~200 us of CPU per relayed message in 20,000-message rounds, all on
# the two cores posternd runs on)
amqp-consume -s 127.0.0.1 --port $AMQP_PORT -q postern.events -A sh -c 'cat >/dev/null' & CONSUMER=$!
SINKS=${SINKS:-webhook amqp}
: >"$WORK/sinks"
extra=()
for s in $SINKS; do
  case $s in
    webhook) echo "webhook hook https://127.0.0.1:$HOOK_PORT/events secret=$WORK/secret ca=$WORK/hook.crt" ;;
    amqp) echo "amqp broker amqp://guest:guest@127.0.0.1:$AMQP_PORT/ format=${AMQP_FORMAT:-ndjson}" ;;
    redis) echo "redis stream maxlen=100000"; extra=("redis_server = 127.0.0.1:$REDIS_PORT") ;;
    *) echo "unknown sink $s" >&2; exit 2 ;;
  esac >>"$WORK/sinks"
done
chmod 644 "$WORK/sinks"
echo "sinks: $SINKS"
sleep 1
# the receivers share the two cores: their CPU per message is printed per round
OTHER_PIDS="$HOOK $(pgrep -s "$RABBIT" | tr "\n" " " || true)"
[[ " $SINKS " == *" redis "* ]] && OTHER_PIDS+=" $REDIS"
OTHER_PIDS_NAME="the receivers (webhook: python3; rabbitmq)"
export OTHER_PIDS OTHER_PIDS_NAME

on_off_rounds "event_sinks = file:$WORK/sinks" "${extra[@]}"

#!/bin/bash
# bench/tls-vs-postfix.sh [BUILD]: TLS on vs off, posternd vs stock Postfix,
# in one run. Both relays get the same throw-away certificate; the load
# client (bench/tls-load.c, built here; LOAD=py for the older
# bench/tls-load.py) opens one session per message, with or without
# STARTTLS; both relay on to an smtp-sink in plain text. Prints messages/s
# end to end (all N at the sink) and the ratios. Needs root (system Postfix).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-2000}; S=${S:-20}; SIZE=${SIZE:-4096}
PF_PORT=2535; PG_PORT=2545; SINK_PORT=2526
WORK=$(mktemp -d /var/tmp/postern-tlsbench.XXXXXX)
chmod 755 "$WORK"
PG=""; SINK=""
cleanup() {
  [ -n "$PG" ] && kill "$PG" 2>/dev/null; [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  postconf -e "smtpd_tls_security_level = none" >/dev/null 2>&1 || true
  postfix stop >/dev/null 2>&1 || true; rm -rf "$WORK"
}
trap cleanup EXIT

LOADER=(python3 bench/tls-load.py)
if [ "${LOAD:-c}" = c ]; then
  cc -O2 -o "$WORK/tls-load" bench/tls-load.c -lssl -lcrypto -lpthread
  LOADER=("$WORK/tls-load")
fi

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
  -subj "/CN=relay.bench.test" 2>/dev/null
chmod 644 "$WORK"/*.pem

PF_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$SHARED/postfix-relay.sh" >/dev/null
postconf -e "smtpd_tls_cert_file = $WORK/cert.pem" "smtpd_tls_key_file = $WORK/key.pem" \
  "smtpd_tls_security_level = may" >/dev/null
postfix reload >/dev/null 2>&1

. bench/lib.sh
postern_conf $PG_PORT $SINK_PORT "$WORK/spool" "tls_cert = $WORK/cert.pem" "tls_key = $WORK/key.pem" \
  >"$WORK/postern.conf"
"$BUILD/posternd" -c "$WORK/postern.conf" 2>"$WORK/posternd.log" & PG=$!
sleep 0.5

# one run: $1 port, $2 "" or --tls; prints end-to-end messages/s
run() {
  smtp-sink -u nobody -c 127.0.0.1:$SINK_PORT 1000 >"$WORK/sink.log" 2>&1 & SINK=$!
  sleep 0.3
  local t0 t1 got
  t0=$(date +%s.%N)
  "${LOADER[@]}" 127.0.0.1 "$1" "$N" "$S" "$SIZE" $2 >/dev/null || { echo "load failed" >&2; exit 1; }
  for _ in $(seq 1200); do
    got=$(tr '\r' '\n' <"$WORK/sink.log" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    [ "${got:-0}" -ge "$N" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  kill $SINK; wait $SINK 2>/dev/null || true; SINK=""
  awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.0f", n / (b - a) }'
}

pf_plain=$(run $PF_PORT ""); pf_tls=$(run $PF_PORT --tls)
pg_plain=$(run $PG_PORT ""); pg_tls=$(run $PG_PORT --tls)
printf "%-9s %10s %10s %14s\n" server plain_mps tls_mps tls/plain
printf "%-9s %10s %10s %14.2f\n" postfix "$pf_plain" "$pf_tls" "$(echo "$pf_tls / $pf_plain" | bc -l)"
printf "%-9s %10s %10s %14.2f\n" posternd "$pg_plain" "$pg_tls" "$(echo "$pg_tls / $pg_plain" | bc -l)"
printf "posternd/postfix: plain %.2f, TLS on both sides %.2f\n" \
  "$(echo "$pg_plain / $pf_plain" | bc -l)" "$(echo "$pg_tls / $pf_tls" | bc -l)"

#!/bin/bash
# bench/submission-vs-postfix.sh [BUILD]: SMTP AUTH PLAIN over STARTTLS, one
# message per session, posternd vs stock Postfix, both checking the login
# against a Cyrus sasldb, alternating ROUNDS times in one run. The load is
# bench/tls-load.py --tls --auth; both relay on to an smtp-sink. Postfix's
# bench smtpd runs unchrooted here so that it can read the sasldb. Prints
# sessions/s end to end and the ratio. Needs root (the system Postfix).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-2000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
PF_PORT=2535; PG_PORT=2545; SINK_PORT=2526
WORK=$(mktemp -d /var/tmp/postern-authbench.XXXXXX)
chmod 755 "$WORK"
PG=""; SINK=""
SASLCONF=/etc/postfix/sasl/smtpd.conf
[ -f "$SASLCONF" ] && cp "$SASLCONF" "$WORK/smtpd.conf.saved"
cleanup() {
  [ -n "$PG" ] && kill "$PG" 2>/dev/null; [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  postconf -e "smtpd_tls_security_level = none" "smtpd_sasl_auth_enable = no" >/dev/null 2>&1 || true
  if [ -f "$WORK/smtpd.conf.saved" ]; then cp "$WORK/smtpd.conf.saved" "$SASLCONF"; else rm -f "$SASLCONF"; fi
  postfix stop >/dev/null 2>&1 || true; rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
  -subj "/CN=relay.bench.test" 2>/dev/null
chmod 644 "$WORK"/*.pem
# one user, in each server's realm (its host name), in each server's own copy
for who in postfix postern; do
  mkdir -p "$WORK/$who"
  for realm in peer.bench.test gw.bench.test; do
    echo secret | saslpasswd2 -f "$WORK/$who/sasldb2" -c -p -u $realm bench
  done
  chown "$who" "$WORK/$who/sasldb2"
  printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n' \
    "$WORK/$who/sasldb2" >"$WORK/$who/conf"
done
mkdir -p /etc/postfix/sasl
cp "$WORK/postfix/conf" "$SASLCONF"
cp "$WORK/postern/conf" "$WORK/postern/postern.conf"
chmod 755 "$WORK"/postfix "$WORK"/postern; chmod 644 "$WORK"/*/postern.conf "$SASLCONF"

PF_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$SHARED/postfix-relay.sh" >/dev/null
postconf -Me "$PF_PORT/inet = $PF_PORT inet n - n - - smtpd"
postconf -e "smtpd_tls_cert_file = $WORK/cert.pem" "smtpd_tls_key_file = $WORK/key.pem" \
  "smtpd_tls_security_level = may" "smtpd_sasl_auth_enable = yes" "smtpd_tls_auth_only = yes" \
  "smtpd_sasl_type = cyrus" "smtpd_sasl_path = smtpd" >/dev/null
postfix reload >/dev/null 2>&1
sleep 1

. bench/lib.sh
postern_conf $PG_PORT $SINK_PORT "$WORK/spool" "tls_cert = $WORK/cert.pem" "tls_key = $WORK/key.pem" \
  "auth_backend = cyrus" "auth_cyrus_config_dir = $WORK/postern" >"$WORK/postern.conf"
"$BUILD/posternd" -c "$WORK/postern.conf" 2>"$WORK/posternd.log" & PG=$!
sleep 0.5

run() {   # $1 port; prints sessions/s end to end
  smtp-sink -u nobody -c 127.0.0.1:$SINK_PORT 1000 >"$WORK/sink.log" 2>&1 & SINK=$!
  sleep 0.3
  local t0 t1 got
  t0=$(date +%s.%N)
  python3 bench/tls-load.py 127.0.0.1 "$1" "$N" "$S" "$SIZE" --tls --auth bench:secret >/dev/null ||
    { echo "load failed on port $1" >&2; exit 1; }
  for _ in $(seq 1200); do
    got=$(tr '\r' '\n' <"$WORK/sink.log" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    [ "${got:-0}" -ge "$N" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  kill $SINK; wait $SINK 2>/dev/null || true; SINK=""
  awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.0f", n / (b - a) }'
}

pf=0; pg=0
for r in $(seq "$ROUNDS"); do
  a=$(run $PF_PORT); b=$(run $PG_PORT)
  echo "round $r: postfix_auth_tls_sps=$a posternd_auth_tls_sps=$b"
  pf=$((pf + a)); pg=$((pg + b))
done
awk -v a="$pf" -v b="$pg" 'BEGIN { printf "total: postfix=%d posternd=%d posternd/postfix=%.2f\n", a, b, b/a }'

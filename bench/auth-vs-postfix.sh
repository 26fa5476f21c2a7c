#!/bin/bash
# bench/auth-vs-postfix.sh [BUILD]: sender authentication on vs off, in one
# run: stock Postfix, posternd without plugins, and posternd with
# spf + dkim_verify + dmarc + authres. Every message is the same DKIM-signed
# (RSA-2048, by posternd's dkim_sign) 4 KiB message, sent by smtp-source -F
# over 20 sessions; the keys, SPF and DMARC records come from a local unbound.
# Prints messages/s end to end (all N at the sink) and the ratios, for
# ROUNDS rounds (default 3) and their medians, with posternd's CPU time per
# message off and on (from /proc: steadier than throughput on a noisy box).
# STRACE=1 counts posternd's system calls per message, off and on.
# PERF=1 also profiles posternd with perf during the last chain-on run
# (PERF_RECORD: perf record options, default "-F 999 -g").
# Caveat: smtp-source connects from 127.0.0.1, which libspf2 passes without
# DNS ("localhost is always allowed"), so SPF costs only the library call;
# DKIM (a key lookup, cached by the resolver, and RSA verification per
# message) and DMARC do their full work. Needs root (the system Postfix).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-3000}; S=${S:-20}
PF_PORT=2535; PG_PORT=2545; SINK_PORT=2526; SIGN_PORT=2555; DNS_PORT=5399
WORK=$(mktemp -d /var/tmp/postern-authbench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; postfix stop >/dev/null 2>&1 || true
            rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh

# a key, its DNS records, and an unbound serving them
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/key.pem" 2>/dev/null
chmod 644 "$WORK/key.pem"
pub=$(openssl pkey -in "$WORK/key.pem" -pubout -outform DER 2>/dev/null | base64 -w0)
txt="v=DKIM1; k=rsa; p=$pub"
cat >"$WORK/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: $DNS_PORT
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "test." static
  local-data: 's1._domainkey.bench.test. TXT "${txt:0:200}" "${txt:200}"'
  local-data: 'bench.test. TXT "v=spf1 ip4:127.0.0.1 -all"'
  local-data: '_dmarc.bench.test. TXT "v=DMARC1; p=reject"'
remote-control:
  control-enable: no
CONF
unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 & PIDS+=($!)
echo "bench.test s1 $WORK/key.pem" >"$WORK/keys"
printf 'test\ncom\n' >"$WORK/psl"
chmod 644 "$WORK/keys" "$WORK/psl"

# one signed message: posternd with dkim_sign relays to an smtp-sink that dumps it
mkdir -p "$WORK/dump" && chmod 777 "$WORK/dump"
smtp-sink -u nobody -d "$WORK/dump/%H." 127.0.0.1:$SINK_PORT 100 >/dev/null 2>&1 & SINKPID=$!
PIDS+=($SINKPID)
postern_conf $SIGN_PORT $SINK_PORT "$WORK/sign-spool" "plugin_dir = $(pwd)/$BUILD/plugins" "plugins = dkim_sign" \
  "dkim_sign.keys = file:$WORK/keys" "log_level = info" >"$WORK/sign.conf"
"$BUILD/posternd" -c "$WORK/sign.conf" 2>"$WORK/sign.log" & SIGNPID=$!
PIDS+=($SIGNPID)
sleep 0.5
body=$(head -c 3000 /dev/zero | tr '\0' 'x' | fold -w 76)
printf 'From: <sender@bench.test>\nTo: <rcpt@dest.test>\nSubject: signed bench message\n\n%s\n' "$body" >"$WORK/plain.eml"
smtp-source -m 1 -F "$WORK/plain.eml" -f sender@bench.test -t rcpt@dest.test 127.0.0.1:$SIGN_PORT || { tail -5 "$WORK/sign.log"; exit 1; }
for _ in $(seq 100); do ls "$WORK"/dump/* >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.3
kill $SIGNPID $SINKPID
# drop smtp-sink's X- lines and its Received header (3 lines): keep what posternd sent
f=$(ls "$WORK"/dump/* | head -1)
awk 'BEGIN{skip=1} skip && /^X-/ {next} skip && /^Received: from .*/ && !r {r=1; n=2; next} n>0 {n--; next} {skip=0; print}' \
  "$f" >"$WORK/signed.eml"
grep -q "^DKIM-Signature:" "$WORK/signed.eml" || { echo "no signed message"; cat "$WORK/sign.log"; exit 1; }

PF_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$SHARED/postfix-relay.sh" >/dev/null

# N copies of the signed message through PORT; prints messages/s end to end
run() {
  local port=$1 log
  log=$(mktemp)
  smtp-sink -u nobody -c 127.0.0.1:$SINK_PORT 1000 >"$log" 2>&1 & local sink=$!
  sleep 0.3
  local t0 t1 got
  t0=$(date +%s.%N)
  smtp-source -s "$S" -m "$N" -F "$WORK/signed.eml" -f sender@bench.test -t rcpt@dest.test 127.0.0.1:$port
  local deadline=$(( $(date +%s) + 120 ))
  while :; do
    got=$(tr '\r' '\n' <"$log" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    [ "${got:-0}" -ge "$N" ] && break
    [ "$(date +%s)" -ge $deadline ] && { echo "timeout: $got of $N" >&2; break; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  kill $sink; rm -f "$log"
  awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN{printf "%.0f", n/(b-a)}'
}

start_posternd() {   # $1: config file
  "$BUILD/posternd" -c "$1" 2>>"$WORK/posternd.log" & PG=$!
  PIDS+=($PG)
  sleep 0.5
}

postern_conf $PG_PORT $SINK_PORT "$WORK/spool-off" "worker_threads = ${WORKERS:-4}" >"$WORK/off.conf"
postern_conf $PG_PORT $SINK_PORT "$WORK/spool-on" "worker_threads = ${WORKERS:-4}" \
  "plugin_dir = $(pwd)/$BUILD/plugins" "plugins = spf, dkim_verify, dmarc, authres" \
  "dns_server = 127.0.0.1:$DNS_PORT" "dmarc.psl = $WORK/psl" >"$WORK/on.conf"


# first prove the chain really verifies: one copy to a dumping sink
start_posternd "$WORK/on.conf"
mkdir -p "$WORK/check" && chmod 777 "$WORK/check"
smtp-sink -u nobody -d "$WORK/check/%H." 127.0.0.1:$SINK_PORT 100 >/dev/null 2>&1 & CHK=$!
sleep 0.3
smtp-source -m 1 -F "$WORK/signed.eml" -f sender@bench.test -t rcpt@dest.test 127.0.0.1:$PG_PORT
for _ in $(seq 100); do ls "$WORK"/check/* >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.3; kill $CHK
ar=$(tr -d '\n\t' <"$(ls "$WORK"/check/* | head -1)" | grep -o "Authentication-Results: [^:]*" || true)
echo "$ar" | grep -q "dkim=pass" && echo "$ar" | grep -q "dmarc=pass" || { echo "chain did not verify: $ar"; exit 1; }
echo "checked: $ar" | cut -c1-160
kill $PG; wait $PG 2>/dev/null || true

# ROUNDS rounds of postfix, posternd off, posternd on (the machine is noisy:
# compare within a round, and look at the median)
ROUNDS=${ROUNDS:-3}
ratios=(); vspf=(); cpu_ratios=()
printf "%-6s %9s %9s %9s %8s %8s %14s\n" round postfix off on on/off on/pf "cpu/msg off:on"
for round in $(seq "$ROUNDS"); do
  pf=$(run $PF_PORT)
  start_posternd "$WORK/off.conf"; c0=$(cpu_ticks $PG); off=$(run $PG_PORT); c1=$(cpu_ticks $PG)
  kill $PG; wait $PG 2>/dev/null || true
  start_posternd "$WORK/on.conf"
  # PERF=1: where posternd's time goes with the chain on (perf, by library), last round
  if [ -n "${PERF:-}" ] && [ "$round" = "$ROUNDS" ]; then
    perf record -q ${PERF_RECORD:--F 999 -g} -p "$(daemon_pid $PG)" -o "$WORK/perf.data" 2>/dev/null & PERFPID=$!
    sleep 0.5
  fi
  c2=$(cpu_ticks $PG); on=$(run $PG_PORT); c3=$(cpu_ticks $PG)
  [ -n "${PERF:-}" ] && [ "$round" = "$ROUNDS" ] && { kill -INT $PERFPID; wait $PERFPID 2>/dev/null || true; }
  kill $PG; wait $PG 2>/dev/null || true
  tick_ms=$(awk -v t="$(getconf CLK_TCK)" 'BEGIN{print 1000 / t}')
  cpu_off=$(awk -v d=$((c1 - c0)) -v n="$N" -v m="$tick_ms" 'BEGIN{printf "%.2f", d * m / n}')
  cpu_on=$(awk -v d=$((c3 - c2)) -v n="$N" -v m="$tick_ms" 'BEGIN{printf "%.2f", d * m / n}')
  r=$(echo "$on / $off" | bc -l); v=$(echo "$on / $pf" | bc -l)
  ratios+=("$r"); vspf+=("$v"); cpu_ratios+=("$(echo "$cpu_off / $cpu_on" | bc -l)")
  printf "%-6s %9s %9s %9s %8.2f %8.2f %8s:%s ms\n" "$round" "$pf" "$off" "$on" "$r" "$v" "$cpu_off" "$cpu_on"
done
# STRACE=1: one more run of each, with posternd's system calls per message
# counted (strace slows it down: no rate is taken from these runs)
if [ -n "${STRACE:-}" ]; then
  for conf in off on; do
    start_posternd "$WORK/$conf.conf"
    strace_start "$PG" "$WORK/strace.$conf"
    run $PG_PORT >/dev/null
    strace_stop
    kill $PG; wait $PG 2>/dev/null || true
    echo "posternd, chain $conf: system calls per message"
    syscalls_per_msg "$WORK/strace.$conf" "$N" "${TOP:-12}"
  done
fi
printf "median ratio auth on / off (posternd):  %s\n" "$(median "${ratios[@]}")"
printf "median ratio posternd auth on / postfix: %s\n" "$(median "${vspf[@]}")"
printf "median posternd CPU per message, off / on: %s\n" "$(median "${cpu_ratios[@]}")"
if [ -n "${PERF:-}" ]; then
  echo "perf: posternd's samples by library (chain on, last round):"
  perf report -q -i "$WORK/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -v '^$' | head -14 || true
  echo "perf: top symbols:"
  perf report -q -i "$WORK/perf.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null | grep -v '^$' | grep '%' | head -20 || true
fi

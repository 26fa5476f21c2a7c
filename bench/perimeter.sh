#!/bin/bash
# bench/perimeter.sh [BUILD]: the shared relay benchmark against posternd
# with the perimeter chain - rcpt_verify (table) + dnsbl + greylist (the
# benchmark's triplet already passed) - and without it, and then with clamav
# added, alternating ROUNDS times in one run. The client is not in
# trusted_networks, so every plugin does its work. A local unbound serves
# the DNS list (nothing listed); a local clamd with a one-signature database
# scans, twice: with clamd's default temporary directory (/tmp, on disk
# here) and with its TemporaryDirectory on tmpfs (/dev/shm), where clamd
# writes each scanned stream. Prints each run and the ratios of the
# end-to-end rates.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
N=${N:-5000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
PORT=2545; SINK_PORT=2526; DNS=127.0.0.53:5354
export TRUSTED=192.0.2.1/32
. bench/lib.sh
WORK=$(mktemp -d /var/tmp/postern-perimeter.XXXXXX)
chmod 755 "$WORK"
PG=""; UB=""; CD=""; CD2=""
SHM=$(mktemp -d /dev/shm/postern-clamd.XXXXXX)
cleanup() { for p in $PG $UB $CD $CD2; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT

# the DNS list: an empty static zone
cat >"$WORK/unbound.conf" <<CONF
server:
  interface: ${DNS%:*}
  port: ${DNS#*:}
  do-daemonize: no
  chroot: ""
  username: ""
  pidfile: ""
  use-syslog: no
  logfile: ""
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "bench.test." static
remote-control:
  control-enable: no
CONF
unbound -d -c "$WORK/unbound.conf" & UB=$!
# clamd with one signature
mkdir -p "$WORK/clamdb"
echo "Postern.Test.EICAR:0:*:$(printf 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE' | od -An -tx1 | tr -d ' \n')" >"$WORK/clamdb/t.ndb"
clamd_conf() {   # socket name, extra line
  printf 'LocalSocket %s/%s\nLocalSocketMode 666\nDatabaseDirectory %s/clamdb\nForeground yes\nLogFile %s/%s.log\n%s\n' \
    "$WORK" "$1" "$WORK" "$WORK" "$1" "$2"
}
clamd_conf clamd.sock "" >"$WORK/clamd.conf"
clamd_conf clamd-shm.sock "TemporaryDirectory $SHM" >"$WORK/clamd-shm.conf"
clamd -c "$WORK/clamd.conf" >/dev/null 2>&1 & CD=$!
clamd -c "$WORK/clamd-shm.conf" >/dev/null 2>&1 & CD2=$!
echo "rcpt@dest.test" >"$WORK/users"
chmod 644 "$WORK/users"
seed_greylist() {
  rm -f "$WORK/grey.sqlite"*
  sqlite3 "$WORK/grey.sqlite" "CREATE TABLE triplet (net TEXT, sender TEXT, rcpt TEXT, first_seen INTEGER,
    last_seen INTEGER, passed INTEGER, PRIMARY KEY (net, sender, rcpt));
    INSERT INTO triplet VALUES ('127.0.0.0/24', 'sender@bench.test', 'rcpt@dest.test', 0, strftime('%s','now'), 1);"
  chmod 666 "$WORK/grey.sqlite"; chmod 777 "$WORK"
}
PERIMETER=("plugin_dir = $BUILD/plugins" "dns_server = $DNS"
  "rcpt_verify.domain = dest.test table" "rcpt_verify.table = file:$WORK/users"
  "dnsbl.sites = zen.bench.test*3" "dnsbl.threshold = 3"
  "greylist.db = $WORK/grey.sqlite" "greylist.auto_whitelist = 0")

# The machine's busy CPU so far (clock ticks, every core: all but idle and iowait).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
us_per_msg() { echo $(( ($2 - $1) * 1000000 / $(getconf CLK_TCK) / N )); }

# run CONFIG LINES...: "RATE BUSY POSTERND CLAMD": the end-to-end rate, and
# the CPU per message in µs of the whole machine, of posternd, of both clamds.
run() {
  rm -rf "$WORK/spool"
  seed_greylist
  postern_conf $PORT $SINK_PORT "$WORK/spool" "$@" >"$WORK/c.conf"
  "$BUILD/posternd" -c "$WORK/c.conf" 2>"$WORK/log" & PG=$!
  sleep 0.5
  local b0 p0 c0 rate
  b0=$(busy_ticks); p0=$(cpu_ticks $PG); c0=$(( $(ticks_of $CD) + $(ticks_of $CD2) ))
  rate=$(bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT | sed -n 's/.*e2e_mps=\([0-9]*\).*/\1/p')
  echo "$rate $(us_per_msg "$b0" "$(busy_ticks)") $(us_per_msg "$p0" "$(cpu_ticks $PG)")" \
    "$(us_per_msg "$c0" $(( $(ticks_of $CD) + $(ticks_of $CD2) )))"
  kill $PG; wait $PG 2>/dev/null || true; PG=""
}

sleep 1
plain=0; perim=0; clam=0; shm=0
CLAM=("${PERIMETER[@]}" "plugins = rcpt_verify, dnsbl, greylist, clamav")
cpu() { echo "machine ${2}us posternd ${3}us clamd ${4}us"; }
for r in $(seq "$ROUNDS"); do
  read -r a a1 a2 a3 < <(run)
  read -r b b1 b2 b3 < <(run "${PERIMETER[@]}" "plugins = rcpt_verify, dnsbl, greylist")
  read -r c c1 c2 c3 < <(run "${CLAM[@]}" "clamav.socket = unix:$WORK/clamd.sock")
  read -r d d1 d2 d3 < <(run "${CLAM[@]}" "clamav.socket = unix:$WORK/clamd-shm.sock")
  echo "round $r: plain_e2e_mps=$a perimeter_e2e_mps=$b perimeter_clamav_e2e_mps=$c (clamd temp on tmpfs: $d)"
  echo "  CPU per message: plain: $(cpu $a $a1 $a2 $a3); perimeter: $(cpu $b $b1 $b2 $b3)"
  echo "                   +clamav: $(cpu $c $c1 $c2 $c3); +clamav, tmpfs: $(cpu $d $d1 $d2 $d3)"
  plain=$((plain + a)); perim=$((perim + b)); clam=$((clam + c)); shm=$((shm + d))
done
awk -v a="$plain" -v b="$perim" -v c="$clam" -v d="$shm" 'BEGIN {
  printf "total: plain=%d perimeter=%d (%.3f of plain) perimeter+clamav=%d (%.3f of plain, %.3f of perimeter)\n", a, b, b/a, c, c/a, c/b
  printf "       perimeter+clamav, clamd temp on tmpfs=%d (%.3f of plain, %.3f of perimeter)\n", d, d/a, d/b }'

# bench/lib.sh - sourced by the bench scripts: the posternd configuration
# they all start from (a loopback relay for dest.test to an smtp-sink).
# postern_conf PORT SINK_PORT SPOOL_DIR [EXTRA LINE...] prints it; an extra
# line for a key the base sets replaces it (a key given twice is an error).
postern_conf() {
  local port=$1 sink=$2 spool=$3
  shift 3
  local keys=" " line
  for line in "$@"; do keys+="${line%%=*}"; keys="${keys% } "; done
  base_conf "$port" "$sink" "$spool" | while IFS= read -r line; do
    case "$keys" in *" ${line%% =*} "*) ;; *) echo "$line" ;; esac
  done
  for line in "$@"; do echo "$line"; done
}

base_conf() {
  local port=$1 sink=$2 spool=$3
  cat <<CONF
listen = 127.0.0.1:$port
hostname = gw.bench.test
spool_dir = $spool
relay_domains = dest.test
trusted_networks = ${TRUSTED:-127.0.0.0/8}
default_transport = smtp:[127.0.0.1]:$sink
log_level = warning
dest_concurrency = 50
CONF
}

# relay_bench_start NAME: what the relay benchmarks share: the defaults
# (N, S, SIZE, ROUNDS, the ports, the shared scripts), a work directory
# $WORK that posternd's user can read, and, at exit, posternd ($PG) killed
# and $WORK removed.
relay_bench_start() {
  SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
  N=${N:-5000}; S=${S:-20}; SIZE=${SIZE:-4096}; ROUNDS=${ROUNDS:-3}
  PORT=2545; SINK_PORT=2526
  WORK=$(mktemp -d "/var/tmp/postern-$1.XXXXXX")
  chmod 755 "$WORK"
  PG=""
  trap 'if [ -n "$PG" ]; then kill "$PG" 2>/dev/null; fi; rm -rf "$WORK"' EXIT
}

# relay_round [CONFIG LINE...]: posternd from $BUILD with the base config and
# these lines, spool in $WORK, the shared relay benchmark of $N messages of
# $SIZE bytes over $S sessions; prints "messages/s end to end, posternd's CPU
# in µs per message". Sets and clears PG (the caller's cleanup kills it).
# A benchmark that prepares posternd first calls the two halves itself.
relay_round() {
  relay_start "$@"
  relay_measure
}

# relay_start [CONFIG LINE...]: a fresh spool, the config, posternd started ($PG).
relay_start() {
  rm -rf "$WORK/spool"
  postern_conf $PORT $SINK_PORT "$WORK/spool" "$@" >"$WORK/c.conf"
  "$BUILD/posternd" -c "$WORK/c.conf" 2>"$WORK/log" & PG=$!
  sleep 0.5
}

# relay_measure: the benchmark against the running posternd, printed as
# relay_round says; then posternd is stopped.
relay_measure() {
  local t0 t1 rate o0 o1
  t0=$(cpu_ticks $PG); o0=$(others_ticks)
  rate=$(bash "$SHARED/relay-bench.sh" $PORT "$N" "$S" "$SIZE" $SINK_PORT | sed -n 's/.*e2e_mps=\([0-9]*\).*/\1/p')
  t1=$(cpu_ticks $PG); o1=$(others_ticks)
  [ -n "${THREAD_CPU:-}" ] && thread_cpu $PG >&2
  [ -n "${OTHER_PIDS:-}" ] && echo "  $OTHER_PIDS_NAME, us/msg: $(others_cpu "$o0" "$o1")" >&2
  echo "$rate $(( (t1 - t0) * 1000000 / $(getconf CLK_TCK) / N ))"
  stop_posternd
}

# stop_posternd: posternd ($PG) stopped, its daemon gone too (it may still be
# writing its last events when the parent has exited), PG cleared.
stop_posternd() {
  local d i
  d=$(daemon_pid "$PG")
  kill "$PG"; wait "$PG" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$d" 2>/dev/null || break; sleep 0.1; done
  PG=""
}

# The CPU so far (clock ticks) of the processes in OTHER_PIDS (a benchmark's
# receivers, say), printed per round beside posternd's when set.
others_ticks() {
  local p
  for p in ${OTHER_PIDS:-}; do printf '%s:%s ' "$(cat "/proc/$p/comm" 2>/dev/null || echo gone)" \
    "$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"; done
}
# others_cpu BEFORE AFTER: each process's CPU between two others_ticks, in
# us per message (processes of one name summed).
others_cpu() {
  printf '%s\n%s\n' "$1" "$2" | awk -v hz="$(getconf CLK_TCK)" -v n="$N" '{for (i = 1; i <= NF; i++) {
    split($i, f, ":"); if (NR == 1) { a[i] = f[2] } else { d[f[1]] += f[2] - a[i] } } }
    END { for (k in d) printf "%s %.0f  ", k, d[k] * 1000000 / hz / n }'
}

# posternd's daemon: the privileged parent's child when started as root.
daemon_pid() { pgrep -P "$1" -x posternd || echo "$1"; }
# Its CPU so far (user + system clock ticks); $1 = the pid posternd was started as.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(daemon_pid "$1")/stat"; }
# THREAD_CPU=1: each of posternd's threads' CPU since it started, in µs per
# message of the round (threads of one name summed; user and system), on
# stderr.
thread_cpu() {
  local d t; d=$(daemon_pid "$1")
  for t in /proc/"$d"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print $14, $15}' "$t/stat")"
  done | awk -v hz="$(getconf CLK_TCK)" -v n="$N" '{u[$1] += $2; s[$1] += $3} END {
    for (k in u) printf "  thread %-16s %6.0f us/msg (user %.0f, system %.0f)\n", k,
      (u[k] + s[k]) * 1000000 / hz / n, u[k] * 1000000 / hz / n, s[k] * 1000000 / hz / n }' | sort -k3 -rn
}
# strace_start PID FILE: count the system calls of posternd (started as PID)
# and all its threads into FILE until strace_stop; STRACE_PID is strace's.
strace_start() { strace -c -f -p "$(daemon_pid "$1")" -o "$2" 2>/dev/null & STRACE_PID=$!; sleep 0.5; }
strace_stop() { kill -INT "$STRACE_PID"; wait "$STRACE_PID" 2>/dev/null || true; }
# syscalls_per_msg FILE N [TOP]: strace -c's table as calls per message, the
# total first, then the TOP (default 12) most frequent.
syscalls_per_msg() {
  awk -v n="$2" 'NR > 2 && $NF ~ /^[a-z_0-9]+$/ {c = ($4 ~ /^[0-9]+$/ ? $4 : $3); if (c ~ /^[0-9]+$/) printf "  %-14s %7.2f\n", $NF, c / n}' "$1" |
    sort -k2 -rn | head -"$(( ${3:-12} + 1 ))"
}

# The median of the arguments (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

# The second over the first, to three places.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }'; }

# on_off_rounds [CONFIG LINE...]: ROUNDS rounds, each posternd as the base
# config has it ("off") then with these lines ("on"); prints each round and
# the medians of the rate and posternd's CPU per message, on against off.
on_off_rounds() {
  local r off off_cpu on on_cpu rates=() cpus=()
  for r in $(seq "$ROUNDS"); do
    read -r off off_cpu < <(relay_round)
    read -r on on_cpu < <(relay_round "$@")
    echo "round $r: e2e_mps off=$off on=$on ($(ratio "$off" "$on")); cpu_us_per_msg off=$off_cpu on=$on_cpu"
    rates+=("$(ratio "$off" "$on")"); cpus+=("$(ratio "$off_cpu" "$on_cpu")")
  done
  echo "median rate on/off: $(median "${rates[@]}"); median posternd CPU per message on/off: x$(median "${cpus[@]}")"
}

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

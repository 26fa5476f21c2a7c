# bench/lib.sh - sourced by the bench scripts: the posternd configuration
# they all start from (a loopback relay for dest.test to an smtp-sink).
# postern_conf PORT SINK_PORT SPOOL_DIR [EXTRA LINE...] prints it.
postern_conf() {
  local port=$1 sink=$2 spool=$3
  shift 3
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
  local line
  for line in "$@"; do echo "$line"; done
}

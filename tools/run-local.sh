#!/bin/bash
# `make run`: start Postfix's smtp-sink on 127.0.0.1:2526 as the next hop and
# posternd in the foreground with policies/postern.conf (SMTP on
# 127.0.0.1:2525). Received mail is dumped under run/sink/. Ctrl-C stops both.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
mkdir -p run/sink
chmod 777 run/sink
user=()
[ "$(id -u)" -eq 0 ] && user=(-u nobody)
smtp-sink "${user[@]}" -d run/sink/%Y%m%d%H%M%S. 127.0.0.1:2526 100 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT
echo "postern: SMTP on 127.0.0.1:2525, relaying to smtp-sink on 127.0.0.1:2526 (dumps in run/sink/)"
echo "postern: try: swaks --server 127.0.0.1:2525 --to someone@example.test"
"$BUILD/posternd" -c policies/postern.conf

#!/bin/bash
# bench/outbound-policy.sh [BUILD]: the shared relay benchmark against
# posternd as it comes, and with outbound policy on: an egress pool of two
# sources (127.0.0.10 and 127.0.0.11, weights 1:1, each its own HELO) and
# named queues (the benchmark's sender in a "bulk" queue, a "transactional"
# queue above it), alternating ROUNDS times (default 3) in one run. Prints
# each round and the medians of the end-to-end rate and posternd's CPU per
# message, policy on against off (issue 38's goal: rate >= 0.95).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. bench/lib.sh
relay_bench_start outbound
cat >"$WORK/egress" <<TABLE
source one 127.0.0.10 one.bench.test
source two 127.0.0.11 two.bench.test
pool both one two
to dest.test both
TABLE
cat >"$WORK/queues" <<TABLE
queue transactional priority=9
queue bulk priority=1
from bench.test bulk
TABLE
chmod 644 "$WORK/egress" "$WORK/queues"

on_off_rounds "egress = file:$WORK/egress" "queues = file:$WORK/queues"

#!/bin/bash
# bench/lua-overhead.sh [BUILD]: the shared relay benchmark against posternd
# without Lua, with bench/trivial.lua (a do-nothing handler on all nine
# stages) as configured by default (the loop runs short calls itself), and
# with the same script but `lua_loop_first = no` (every call a round trip
# to a Lua thread), alternating ROUNDS times (default 3) in one run.
# Prints each round and the medians: the end-to-end rate against the rate
# without Lua (overhead = 1 - ratio), and posternd's CPU per message
# against the CPU without Lua (steadier than the rate on a noisy machine).
# WITH= another chain line in place of the script (e.g. a C plugin).
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
. bench/lib.sh
relay_bench_start luabench
CHAIN=${WITH:-plugins = lua:$(pwd)/bench/trivial.lua}

loop_rates=(); thread_rates=(); loop_cpus=(); thread_cpus=()
for r in $(seq "$ROUNDS"); do
  read -r plain plain_cpu < <(relay_round)
  read -r loop loop_cpu < <(relay_round "$CHAIN")
  read -r thread thread_cpu < <(relay_round "$CHAIN" "lua_loop_first = no")
  echo "round $r: e2e_mps without=$plain loop_first=$loop threads_only=$thread;" \
       "cpu_us_per_msg without=$plain_cpu loop_first=$loop_cpu threads_only=$thread_cpu"
  loop_rates+=("$(ratio "$plain" "$loop")"); thread_rates+=("$(ratio "$plain" "$thread")")
  loop_cpus+=("$(ratio "$plain_cpu" "$loop_cpu")"); thread_cpus+=("$(ratio "$plain_cpu" "$thread_cpu")")
done
overhead() { awk -v r="$1" 'BEGIN { printf "%.1f%%", (1 - r) * 100 }'; }
lr=$(median "${loop_rates[@]}"); tr=$(median "${thread_rates[@]}")
echo "median rate with/without Lua: loop_first=$lr (overhead $(overhead "$lr")) threads_only=$tr (overhead $(overhead "$tr"))"
echo "median posternd CPU per message with/without Lua: loop_first=x$(median "${loop_cpus[@]}") threads_only=x$(median "${thread_cpus[@]}")"

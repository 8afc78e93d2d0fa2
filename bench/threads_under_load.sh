#!/usr/bin/env bash
# Why the embedded engine defaults to one inference thread: its generation
# speed with 1 and 2 threads on this machine, alone and while one other
# process keeps one core busy (a stand-in for the server's own crypto, a
# build, or any neighbour), alternating so that both see the same machine.
#
#   bench/threads_under_load.sh [MODEL.gguf]      # ~3 minutes
#
# Uses crates/nomyo-engine/examples/bench.rs (greedy, 64 tokens after a short
# prompt, 3 runs: median). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
scripts/sysdeps.sh install build >&2
cargo build --release --quiet -p nomyo-engine --example bench >&2
bench=target/release/examples/bench

busy_pid=""
stop_busy() {
    if [[ -n "$busy_pid" ]]; then
        kill "$busy_pid" 2>/dev/null || true
        wait "$busy_pid" 2>/dev/null || true # killed: non-zero by design
    fi
    busy_pid=""
}
trap stop_busy EXIT

gen() { # threads -> generation tok/s (median of 3)
    "$bench" "$model" --threads "$1" --tokens 64 --prompt-words 8 --runs 3 --json 2>/dev/null \
        | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["gen_tok_s"], 1))'
}

declare -A r
for round in 1 2; do
    for t in 1 2; do
        r[alone,$t,$round]="$(gen "$t")"
        python3 -c 'while True: pass' &
        busy_pid=$!
        sleep 0.5
        r[busy,$t,$round]="$(gen "$t")"
        stop_busy
    done
done

echo "\`bench/threads_under_load.sh\`; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(date -u '+%Y-%m-%d %H:%M UTC')."
echo
echo "| threads | generation tok/s, machine otherwise idle | with one core kept busy by another process |"
echo "|---|---|---|"
for t in 1 2; do
    echo "| $t | ${r[alone,$t,1]}, ${r[alone,$t,2]} | ${r[busy,$t,1]}, ${r[busy,$t,2]} |"
done

#!/usr/bin/env bash
# One `nomyo serve` binary against another with the embedded model, one
# stream at a time (concurrency 1), through the encrypted path: did a change
# to the engine cost a single user anything? Interleaved repetitions, each
# server pinned to CPU 0 and the load generator to CPU 1.
#
#   bench/engine_before_after.sh BEFORE_BIN AFTER_BIN [REPS]
#
# e.g. build the commit before a change into /tmp/nomyo-before and the
# change into /tmp/nomyo-after (`cargo build --release -p nomyo-cli`, copy
# target/release/nomyo). Each run: `nomyo bench --protocol v2 --stream -c 1
# -n 12 --max-tokens 64 --prompt-tokens 100` (the second binary's bench);
# prints a Markdown table (median and range of REPS, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
before="${1:?usage: $0 BEFORE_BIN AFTER_BIN [REPS]}"
after="${2:?usage: $0 BEFORE_BIN AFTER_BIN [REPS]}"
reps="${3:-3}"
model="${NOMYO_MODEL_FILE:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
port=12495
work="$(mktemp -d)"
server_pid=""
stop() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true # killed: non-zero by design
    fi
    server_pid=""
}
trap 'stop; rm -rf "$work"' EXIT

run() { # binary label rep -> one JSON line appended to $work/results
    local bin="$1" label="$2" rep="$3"
    # `exec`: the PID stopped below is the server's own, not a subshell's
    # (killing a subshell would leave the server holding the port, and the
    # next run would measure it instead of its own binary).
    (cd "$work" && exec taskset -c 0 "$bin" serve --model "$model" --ephemeral-key \
        --listen "127.0.0.1:$port" --threads 1 --context 2048 >/dev/null 2>"$work/serve.log") &
    server_pid=$!
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        echo "engine_before_after: port $port is already served; stop that server first" >&2
        exit 1
    fi
    for _ in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    taskset -c 1 "$after" bench --base-url "http://127.0.0.1:$port" --protocol v2 --stream \
        -c 1 -n 12 --warmup 2 --max-tokens 64 --prompt-tokens 100 \
        --known-servers "$work/known_servers-$label-$rep" --json 2>/dev/null \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); d["label"]=sys.argv[1]; d["rep"]=int(sys.argv[2]); print(json.dumps(d))' "$label" "$rep" \
        >>"$work/results"
    stop
}

for rep in $(seq 1 "$reps"); do
    run "$before" before "$rep"
    run "$after" after "$rep"
done

python3 - "$work/results" "$reps" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def cell(label, key):
    v = [r[key] for r in rows if r["label"] == label and r.get(key) is not None]
    if not v:
        return "n/a", None
    m = statistics.median(v)
    return f"{m:.1f} ({min(v):.1f}-{max(v):.1f})", m
keys = [("generated_tokens_per_s", "generated tok/s"), ("ttft_p50_ms", "TTFT p50 ms"),
        ("decode_tokens_per_s_mean", "decode tok/s per stream"), ("p50_ms", "answer p50 ms")]
print(f"Concurrency 1, protocol v2 streamed, 64 tokens after a 100-token prompt, 1 thread; median (range) of {sys.argv[2]} interleaved runs.")
print()
print("| measure | before | after | after / before |")
print("|---|---|---|---|")
for k, name in keys:
    b, bm = cell("before", k)
    a, am = cell("after", k)
    ratio = f"{am / bm:.2f}" if am is not None and bm else "n/a"
    print(f"| {name} | {b} | {a} | {ratio} |")
EOF

#!/usr/bin/env bash
# What streaming costs on the server's path, with nothing else in the way:
# `nomyo serve` in front of an upstream that answers at once
# (crates/nomyo-client/examples/instant_upstream.rs), then `nomyo bench
# --protocol v2` streamed and unstreamed, one request at a time, for each
# nomyo binary given (default: target/debug/nomyo). A streamed answer is many
# small writes; if the server's sockets delay them (Nagle's algorithm meeting
# the client's delayed ACK), the streamed median jumps by tens of
# milliseconds while the unstreamed one does not.
#
#   bench/streamed_path.sh [NOMYO_BIN...]      # REPS=3 SECONDS_PER_POINT=4
#
# Prints one line per point: repetition, binary, mode, p50 ms, requests.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=("$@")
((${#bins[@]})) || bins=(target/debug/nomyo)
reps="${REPS:-3}"
secs="${SECONDS_PER_POINT:-4}"
scripts/sysdeps.sh install build >&2
cargo build -q -p nomyo-client --example instant_upstream
upstream_bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/instant_upstream"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$upstream_bin" >"$work/upstream" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$work/upstream" ]] && break; sleep 0.1; done
upstream="$(head -n1 "$work/upstream")"

first_bin="${bins[0]}"
for rep in $(seq "$reps"); do
    for bin in "${bins[@]}"; do
        "$bin" serve --listen 127.0.0.1:0 --ephemeral-key --key-bits 2048 --upstream "$upstream" \
            >"$work/serve" 2>"$work/serve.err" &
        server=$!
        url=""
        for _ in $(seq 100); do
            url="$(sed -n 's/^listening on //p' "$work/serve" | head -n1)"
            [[ -n "$url" ]] && break
            sleep 0.1
        done
        [[ -n "$url" ]] || { cat "$work/serve.err" >&2; exit 1; }
        for mode in stream plain; do
            flag=()
            [[ "$mode" == stream ]] && flag=(--stream)
            HOME="$work" "$first_bin" bench --base-url "$url" --protocol v2 "${flag[@]}" \
                --model bench-model --concurrency 1 --duration "${secs}s" --json 2>/dev/null \
                | python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.2f %d" % (j["p50_ms"], j["requests"]))' \
                | { read -r p50 n; echo "rep=$rep bin=$bin mode=$mode p50_ms=$p50 requests=$n"; }
        done
        kill "$server"
        wait "$server" 2>/dev/null || true
    done
done

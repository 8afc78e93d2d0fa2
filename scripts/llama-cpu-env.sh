#!/usr/bin/env bash
# Prints `export GGML_…=ON` lines for the x86 instruction sets this CPU has,
# for llama.cpp as compiled by the llama-cpp-sys-2 build script:
#
#     eval "$(scripts/llama-cpu-env.sh)"
#
# Why: llama-cpp-sys-2 turns llama.cpp's own CPU detection (GGML_NATIVE) off
# and enables only the target features rustc was given, which by default is
# the x86-64 baseline (SSE2). llama.cpp's matrix kernels then run without
# AVX2/AVX-512, several times slower than a llama.cpp built the usual way.
# The build script forwards GGML_* variables it does not set itself, so these
# give the embedded engine the same kernels as a native llama.cpp build
# without changing how any Rust crate is compiled.
#
# The binary then needs a CPU with these instructions: build on the machine
# that runs it (as scripts/demo.sh and .ci/run do). Set NOMYO_PORTABLE=1 to
# print nothing and keep the portable baseline.
set -euo pipefail

[[ "${NOMYO_PORTABLE:-0}" == 1 ]] && exit 0
[[ "$(uname -m)" == x86_64 ]] || exit 0
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "

# /proc/cpuinfo flag -> ggml CMake option (ggml/src/ggml-cpu/CMakeLists.txt)
while read -r flag option; do
    if [[ "$flags" == *" $flag "* ]]; then
        echo "export $option=ON"
    fi
done <<'EOF'
sse4_2 GGML_SSE42
avx GGML_AVX
avx2 GGML_AVX2
fma GGML_FMA
f16c GGML_F16C
bmi2 GGML_BMI2
avx_vnni GGML_AVX_VNNI
avx512f GGML_AVX512
avx512_vbmi GGML_AVX512_VBMI
avx512_vnni GGML_AVX512_VNNI
avx512_bf16 GGML_AVX512_BF16
EOF

"""The benchmark suite's settings (bench/suite.py): the repository's paths and
binaries, the model name, the CPU placement (server side on CPU 0, load
generators on the others) and the protocols measured."""

import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOMYO = os.path.join(REPO, "target/release/nomyo")
CEILING = os.path.join(REPO, "target/release/examples/ceiling")
UPSTREAM = os.path.join(REPO, "target/release/examples/instant_upstream")
COMPARE = os.path.join(REPO, "crates/nomyo-client/benches/compare_v1.py")
ENGINE_VS_LLAMACPP = os.path.join(REPO, "bench/engine_vs_llamacpp.sh")
BENCH_CRYPTO = os.path.join(REPO, "tests/python/bench_crypto.py")
CRITERION = os.path.join(REPO, "target/criterion")
MODEL = "bench-model"

CPUS = os.cpu_count() or 1
PINNED = CPUS >= 2 and os.path.exists("/usr/bin/taskset")
SERVER_PIN = ["taskset", "-c", "0"] if PINNED else []
CLIENT_CPUS = "1" if CPUS == 2 else f"1-{CPUS - 1}"
CLIENT_PIN = ["taskset", "-c", CLIENT_CPUS] if PINNED else []

PROTOS = ["v1", "v2-x25519", "v2-xwing"]
PROTO_NAME = {"v1": "v1 (RSA-4096)", "v2-x25519": "v2 X25519", "v2-xwing": "v2 X-Wing",
              "plain": "plaintext (no encryption)"}
CEIL_KEY = {"v1": "rsa4096_open", "v2-x25519": "hpke_open_x25519", "v2-xwing": "hpke_open_xwing"}

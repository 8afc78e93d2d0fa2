"""The core table of the benchmark suite (bench/suite.py): short criterion runs
of crates/nomyo-core/benches beside Python `cryptography` and the reference
client (tests/python/bench_crypto.py), as markdown."""

import json
import os
import time

from suite_config import BENCH_CRYPTO, CLIENT_CPUS, CLIENT_PIN, CRITERION, PINNED
from suite_proc import log, problems, run_measured


# The core table: (label, criterion id, tests/python/bench_crypto.py operation).
CORE_ROWS = [
    ("v1 seal 1 KiB (AES-256-GCM, RSA-OAEP wrap, base64, JSON)", "seal/1KiB", "seal 1KiB"),
    ("v1 seal 1 MiB", "seal/1MiB", "seal 1MiB"),
    ("v1 open 1 KiB (parse, RSA-OAEP unwrap, AES-GCM)", "open/1KiB", "open 1KiB"),
    ("v1 open 1 MiB", "open/1MiB", "open 1MiB"),
    ("RSA-4096 OAEP decrypt (private-key operation)", "rsa4096/oaep_decrypt", "RSA-4096 OAEP decrypt (private op)"),
    ("RSA-4096 OAEP encrypt (public-key operation)", "rsa4096/oaep_encrypt", "RSA-4096 OAEP encrypt (public op)"),
    ("reference client `encrypt_payload` 1 KiB vs Rust seal", "seal/1KiB", "nomyo 0.2.9 encrypt_payload 1KiB"),
    ("reference client `decrypt_response` 1 KiB vs Rust open", "open/1KiB", "nomyo 0.2.9 decrypt_response 1KiB"),
    ("reference client `encrypt_payload` 1 MiB vs Rust seal", "seal/1MiB", "nomyo 0.2.9 encrypt_payload 1MiB"),
    ("reference client `decrypt_response` 1 MiB vs Rust open", "open/1MiB", "nomyo 0.2.9 decrypt_response 1MiB"),
    ("v2 seal X25519 1 KiB (client: HPKE setup + 1 frame)", "v2_seal/x25519", None),
    ("v2 seal X-Wing 1 KiB", "v2_seal/xwing", None),
    ("v2 open X25519 1 KiB (server: decapsulation + 1 frame)", "v2_open/x25519", None),
    ("v2 open X-Wing 1 KiB", "v2_open/xwing", None),
    ("v2 response 1 KiB: key derivation, seal and open", "v2_response/seal_open", None),
    ("`SecretBuf` of 1 KiB: filled, zeroed, dropped", "secret_buf/1KiB", None),
]


def fmt_s(x):
    if x is None:
        return "–"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} µs" if x >= 1e-6 else f"{x * 1e9:.0f} ns"


def core(a):
    """Short criterion runs of the core benches, beside Python; returns markdown."""
    t0 = time.time()
    cmd = CLIENT_PIN + ["cargo", "bench", "-p", "nomyo-core", "--bench", "v1", "--bench", "v2", "--",
                        "--warm-up-time", "1", "--measurement-time", str(a.core_seconds), "--noplot",
                        "^(seal|open|rsa4096|v2_seal|v2_open|v2_response|secret_buf)/"]
    rc, out, err, _ = run_measured(cmd, timeout=900)
    if rc != 0:
        problems.append(f"`cargo bench -p nomyo-core` failed (exit {rc}): {err.strip()[-300:]}")
    rust = {}
    for _, cid, _ in CORE_ROWS:
        path = os.path.join(CRITERION, cid, "new", "estimates.json")
        try:
            if os.path.getmtime(path) < t0:
                continue  # a result from an earlier run
            with open(path) as f:
                m = json.load(f)["median"]
            ci = m["confidence_interval"]
            rust[cid] = (m["point_estimate"] / 1e9, ci["lower_bound"] / 1e9, ci["upper_bound"] / 1e9)
        except (OSError, KeyError, ValueError):
            pass
    py = {}
    rc, out, err, _ = run_measured(CLIENT_PIN + [a.python, BENCH_CRYPTO, "--json", "--keygen-runs", "1"],
                                   timeout=600)
    if rc == 0:
        py = {r["operation"]: (r["python_s"], r["python_runs"]) for r in json.loads(out)}
    else:
        problems.append(f"bench_crypto.py failed (exit {rc}): {err.strip()[-300:]}")
    L = ["### Core: per-operation cost (criterion) beside Python `cryptography` and nomyo 0.2.9", "",
         f"`cargo bench -p nomyo-core --bench v1 --bench v2 -- --warm-up-time 1 --measurement-time "
         f"{a.core_seconds:g}` (criterion median, its 95% interval in brackets; one thread, "
         f"CPU {CLIENT_CPUS if PINNED else 'any'}); Python: `tests/python/bench_crypto.py` (Python "
         "`cryptography`, written the way the reference client writes it; the `nomyo 0.2.9` rows call "
         "the unmodified reference client), median of n after a warm-up. RSA key generation is left "
         "out (a random search for primes: 0.2–2.5 s either way).", "",
         "| operation | Rust: nomyo-core | Python | Python / Rust |", "|---|---:|---:|---:|"]
    for label, cid, pyop in CORE_ROWS:
        r = rust.get(cid)
        p = py.get(pyop) if pyop else None
        rcell = f"{fmt_s(r[0])} ({fmt_s(r[1])}–{fmt_s(r[2])})" if r else "–"
        pcell = f"{fmt_s(p[0])} (n={p[1]})" if p and p[0] else ("" if pyop is None else "–")
        ratio = f"{p[0] / r[0]:.1f}×" if p and p[0] and r else ""
        L.append(f"| {label} | {rcell} | {pcell} | {ratio} |")
    L.append("")
    log(f"core benches took {time.time() - t0:.0f} s")
    return "\n".join(L) + "\n"

#!/usr/bin/env python3
"""The v1 operations of benches/v1.rs, timed in Python `cryptography` (OpenSSL)
the way the reference client `nomyo` 0.2.9 does them, and printed beside the
criterion results of the same run.

    cargo bench -p nomyo-core --bench v1
    .venv/bin/python tests/python/bench_crypto.py --criterion target/criterion

Each Python figure is the median of N timed repetitions (N shown), after one
warm-up. `reference encrypt_payload` / `decrypt_response` time the unmodified
nomyo 0.2.9 methods (its server-key fetch answered from memory), with a JSON
payload of the given size.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The same sealing as the interoperability tests'.
from v1_package import OAEP
from v1_package import py_seal as seal


def open_(wire: bytes, private_key) -> bytes:
    p = json.loads(wire)
    if p["version"] != "1.0" or p["algorithm"] != "hybrid-aes256-rsa4096":
        raise ValueError("unsupported")
    e = p["encrypted_payload"]
    aes_key = private_key.decrypt(base64.b64decode(p["encrypted_aes_key"]), OAEP)
    ct = base64.b64decode(e["ciphertext"]) + base64.b64decode(e["tag"])
    return AESGCM(aes_key).decrypt(base64.b64decode(e["nonce"]), ct, None)


def timeit(fn, n):
    fn()  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def criterion_estimate(root, group, bench):
    """Median (seconds) from criterion's estimates.json, or None."""
    path = os.path.join(root, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e9
    except (OSError, KeyError, ValueError):
        return None


def fmt(seconds):
    if seconds is None:
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion", default="target/criterion", help="criterion output directory")
    ap.add_argument("--keygen-runs", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()

    import cryptography

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pub = key.public_key()
    rows = []  # (operation, criterion group, bench, python seconds, n)

    t, n = timeit(lambda: rsa.generate_private_key(public_exponent=65537, key_size=4096), args.keygen_runs)
    rows.append(("RSA-4096 key generation", "keygen", "rsa4096", t, n))
    for name, size in [("1KiB", 1024), ("1MiB", 1 << 20)]:
        data = b"a" * size
        t, n = timeit(lambda: seal(data, pub), 200 if size < 4096 else 30)
        rows.append((f"seal {name}", "seal", name, t, n))
    for name, size in [("1KiB", 1024), ("1MiB", 1 << 20)]:
        wire = seal(b"a" * size, pub)
        t, n = timeit(lambda: open_(wire, key), 200 if size < 4096 else 30)
        rows.append((f"open {name}", "open", name, t, n))
    wrapped = pub.encrypt(b"\x07" * 32, OAEP)
    t, n = timeit(lambda: key.decrypt(wrapped, OAEP), 300)
    rows.append(("RSA-4096 OAEP decrypt (private op)", "rsa4096", "oaep_decrypt", t, n))
    t, n = timeit(lambda: pub.encrypt(b"\x07" * 32, OAEP), 300)
    rows.append(("RSA-4096 OAEP encrypt (public op)", "rsa4096", "oaep_encrypt", t, n))

    # The unmodified reference client, end to end.
    extra = []
    try:
        from cryptography.hazmat.primitives import serialization
        from nomyo.SecureCompletionClient import SecureCompletionClient

        client = SecureCompletionClient(router_url="https://nomyo.invalid")
        client.private_key = key
        server_pem = pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

        async def fetch():
            return server_pem

        client.fetch_server_public_key = fetch
        loop = asyncio.new_event_loop()  # one loop: time the client, not loop set-up
        for name, size in [("1KiB", 1024), ("1MiB", 1 << 20)]:
            payload = {"model": "m", "messages": [{"role": "user", "content": "a" * (size - 60)}]}
            t, n = timeit(lambda: loop.run_until_complete(client.encrypt_payload(payload)), 100 if size < 4096 else 20)
            extra.append((f"nomyo 0.2.9 encrypt_payload {name}", "seal", name, t, n))
            wire = seal(json.dumps(payload).encode(), pub)
            t, n = timeit(lambda: loop.run_until_complete(client.decrypt_response(wire, "p")), 100 if size < 4096 else 20)
            extra.append((f"nomyo 0.2.9 decrypt_response {name}", "open", name, t, n))
        loop.close()
    except ImportError:
        pass

    if args.json:
        out = [
            {"operation": op, "rust_s": criterion_estimate(args.criterion, g, b), "python_s": t, "python_runs": n}
            for op, g, b, t, n in rows + extra
        ]
        print(json.dumps(out, indent=1))
        return

    print(f"Python {sys.version.split()[0]}, cryptography {cryptography.__version__}; "
          f"Rust: criterion medians from {args.criterion}")
    print()
    print("| operation | Rust (aws-lc-rs, nomyo-core) | Python (cryptography) | Python / Rust |")
    print("|---|---:|---:|---:|")
    for op, g, b, t, n in rows + extra:
        r = criterion_estimate(args.criterion, g, b)
        ratio = f"{t / r:.1f}×" if r else "n/a"
        print(f"| {op} | {fmt(r)} | {fmt(t)} (n={n}) | {ratio} |")


if __name__ == "__main__":
    main()

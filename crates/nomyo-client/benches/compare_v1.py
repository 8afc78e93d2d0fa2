#!/usr/bin/env python3
"""Per-request latency: the Rust nomyo-client vs the Python nomyo==0.2.9 client.

Both clients talk, sequentially and in the same run, to the same `nomyo serve`
(protocol v1, RSA-4096 server key) in front of an instant OpenAI-compatible
upstream. Each part runs in its own process so that no client shares a
Python interpreter (and its GIL) with the upstream or the harness.

    cargo build --release -p nomyo-cli --no-default-features
    cargo build --release -p nomyo-client --example bench_v1 --example instant_upstream
    /tmp/pyv/bin/python crates/nomyo-client/benches/compare_v1.py \
        --python /tmp/pyv/bin/python --requests 200 --first 10

Prints a Markdown table for BENCHMARKS.md and the raw JSON of each client.
`--python` must have `nomyo==0.2.9` installed (pip install nomyo==0.2.9).
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODEL = "bench-model"


def percentile(sorted_values, p):
    """Nearest rank, as the Rust bench computes it."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), -(-int(p * len(sorted_values)) // 100)))
    return sorted_values[rank - 1]


# --- the instant upstream (own process) -------------------------------------


def run_upstream():
    body_models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
    answer = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1764300000,
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without TCP_NODELAY,
        # Nagle + the peer's delayed ACK add ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def _send(self, body):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(body_models)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._send(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()


# --- the Python client (own process) ----------------------------------------


def run_python_client(url, requests, first):
    import warnings

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    from nomyo import SecureChatCompletion

    messages = [{"role": "user", "content": "Say hello."}]

    async def main():
        first_ms = []
        for _ in range(first):
            client = SecureChatCompletion(base_url=url, allow_http=True)
            t = time.perf_counter()
            await client.create(model=MODEL, messages=messages)
            first_ms.append((time.perf_counter() - t) * 1e3)
        client = SecureChatCompletion(base_url=url, allow_http=True)
        await client.create(model=MODEL, messages=messages)
        ms = []
        for _ in range(requests):
            t = time.perf_counter()
            r = await client.create(model=MODEL, messages=messages)
            ms.append((time.perf_counter() - t) * 1e3)
            assert r["choices"][0]["message"]["content"] == "Hello!"
        mean = statistics.fmean(ms)
        ms.sort()
        from cryptography.hazmat.primitives.asymmetric import rsa

        keygen_ms = []
        for _ in range(first):
            t = time.perf_counter()
            rsa.generate_private_key(public_exponent=65537, key_size=4096)
            keygen_ms.append((time.perf_counter() - t) * 1e3)
        return {
            "client": "nomyo 0.2.9 (Python)",
            "requests": requests,
            "median_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95),
            "mean_ms": mean,
            "first_ms": first_ms,
            "first_median_ms": percentile(sorted(first_ms), 50),
            "keygen_median_ms": percentile(sorted(keygen_ms), 50),
        }

    print(json.dumps(asyncio.run(main())), flush=True)


# --- the harness --------------------------------------------------------------


def start_line(cmd, pattern, timeout=120):
    """Starts cmd and returns (process, first stdout match of pattern)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd[0]} exited before printing its address")
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, m.group(1)
    p.kill()
    raise RuntimeError(f"{cmd[0]} did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter with nomyo==0.2.9")
    ap.add_argument("--nomyo", default=os.path.join(REPO, "target/release/nomyo"))
    ap.add_argument("--rust-bench", default=os.path.join(REPO, "target/release/examples/bench_v1"))
    ap.add_argument(
        "--upstream",
        default=os.path.join(REPO, "target/release/examples/instant_upstream"),
        help="instant upstream binary (falls back to a Python http.server one if absent)",
    )
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--first", type=int, default=10)
    ap.add_argument("--upstream-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--python-client", metavar="URL", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.upstream_only:
        return run_upstream()
    if a.python_client:
        return run_python_client(a.python_client, a.requests, a.first)

    procs = []
    try:
        upstream_cmd = [a.upstream] if os.path.exists(a.upstream) else [sys.executable, __file__, "--upstream-only"]
        up, up_url = start_line(upstream_cmd, r"^(http://\S+)")
        procs.append(up)
        srv, url = start_line(
            [a.nomyo, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key", "--upstream", up_url, "--upstream-model", MODEL],
            r"listening on (https?://\S+)",
        )
        procs.append(srv)
        results = []
        for cmd in (
            [a.rust_bench, "--base-url", url, "--allow-http", "--model", MODEL, "--requests", str(a.requests), "--first", str(a.first)],
            [a.python, __file__, "--python-client", url, "--requests", str(a.requests), "--first", str(a.first)],
        ):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
            p.wait()

    rust, py = results
    print("| client | median ms | p95 ms | mean ms | first request median ms | RSA-4096 keygen median ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in (rust, py):
        print(
            f"| {r['client']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | {r['mean_ms']:.2f} "
            f"| {r['first_median_ms']:.0f} | {r['keygen_median_ms']:.0f} |"
        )
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"Python/Rust median ratio: {py['median_ms'] / rust['median_ms']:.1f}x; "
          f"p95 ratio: {py['p95_ms'] / rust['p95_ms']:.1f}x "
          f"({a.requests} sequential requests each, {a.first} fresh clients for the first request).")
    print()
    print("```json")
    print(json.dumps(results, indent=1))
    print("```")


if __name__ == "__main__":
    main()

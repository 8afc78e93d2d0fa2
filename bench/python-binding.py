#!/usr/bin/env python3
"""The Python package nomyo_rs (python/) against the reference client nomyo
0.2.9: per-request latency over protocol v1 (forced) and v2, and 64
concurrent requests in one event loop.

Both clients are used as an application would: one client object per
package and protocol, created once and reused, so that its client key, the
server's key and (for nomyo_rs) its connections are cached; one warm-up
request each before measuring. nomyo speaks only v1 (and opens a new HTTP
client per request: that is its design, measured as it is). Repetitions are
interleaved: in each one every client runs its sequential requests, then its
concurrent batch, in turn.

The server is a release `nomyo serve --ephemeral-key` in front of the instant
upstream (crates/nomyo-client/examples/instant_upstream.rs, a test double
that answers at once; built here when it is missing); the numbers are the
clients' and the protocols'.

    cargo build --release -p nomyo-cli        # target/release/nomyo
    pip install ./python                      # nomyo_rs, release build
    python3 bench/python-binding.py [--reps 5] [--requests 100] [--concurrent 64]

NOMYO_BIN overrides the server binary.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOMYO = os.environ.get("NOMYO_BIN", os.path.join(REPO, "target/release/nomyo"))
INSTANT = os.path.join(REPO, "target/release/examples/instant_upstream")
MODEL = "bench-model"

warnings.filterwarnings("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite_proc import start_line  # noqa: E402


def start_upstream():
    if not os.access(INSTANT, os.X_OK):
        subprocess.run(
            ["cargo", "build", "--release", "-p", "nomyo-client", "--example", "instant_upstream"],
            cwd=REPO,
            check=True,
        )
    p, url = start_line([INSTANT], r"^(http://\S+)")
    return p, url, "instant_upstream (Rust)"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def sequential(client, n):
    """Per-request wall-clock times (ms) of n requests one after another."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.create(model=MODEL, messages=[{"role": "user", "content": f"hello {i}"}])
        times.append((time.perf_counter() - t0) * 1000)
        assert r["_metadata"]["is_encrypted"] is True
    return times


async def concurrent(client, n):
    """Wall-clock time (ms) of n requests started at once in this loop."""
    t0 = time.perf_counter()
    answers = await asyncio.gather(
        *(client.create(model=MODEL, messages=[{"role": "user", "content": f"c {i}"}]) for i in range(n))
    )
    elapsed = (time.perf_counter() - t0) * 1000
    assert len(answers) == n and all(a["_metadata"]["is_encrypted"] for a in answers)
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100, help="sequential requests per client and repetition")
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--json", help="also write the raw numbers here")
    a = ap.parse_args()

    import logging

    import nomyo
    import nomyo_rs

    # nomyo warns twice per request about plain HTTP (to stderr, through
    # logging's last-resort handler); keep the output readable.
    logging.getLogger("nomyo").setLevel(logging.ERROR)

    procs = []
    tmp = tempfile.mkdtemp(prefix="nomyo-pybench-")
    try:
        up, upstream_url, upstream_name = start_upstream()
        procs.append(up)
        srv, url = start_line(
            [NOMYO, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key", "--upstream", upstream_url,
             "--upstream-model", MODEL],
            r"listening on (https?://\S+)",
        )
        procs.append(srv)
        known = os.path.join(tmp, "known_servers")
        clients = {
            "nomyo 0.2.9 (v1)": nomyo.SecureChatCompletion(base_url=url, allow_http=True),
            "nomyo_rs v1": nomyo_rs.SecureChatCompletion(base_url=url, allow_http=True, protocol="v1", known_servers=known),
            "nomyo_rs v2": nomyo_rs.SecureChatCompletion(base_url=url, allow_http=True, protocol="v2", known_servers=known),
        }
        seq = {k: [] for k in clients}  # per rep: list of per-request ms
        conc = {k: [] for k in clients}  # per rep: batch ms

        async def run():
            for c in clients.values():  # keys made, server key fetched
                await sequential(c, 2)
            for rep in range(a.reps):
                for name, c in clients.items():
                    seq[name].append(await sequential(c, a.requests))
                for name, c in clients.items():
                    conc[name].append(await concurrent(c, a.concurrent))
                print(f"rep {rep + 1}/{a.reps} done", file=sys.stderr)

        asyncio.run(run())
    finally:
        for p in procs:
            p.kill()
            p.wait()

    ref = "nomyo 0.2.9 (v1)"
    print(f"server: release nomyo serve --ephemeral-key, upstream: {upstream_name}")
    print(f"{a.reps} interleaved repetitions; {a.requests} sequential requests and a batch of {a.concurrent} concurrent requests per client and repetition\n")
    print("| client | p50 ms | p95 ms | p50 range over reps | x faster than nomyo (p50) |")
    print("|---|---:|---:|---:|---:|")
    for name in clients:
        allv = [x for r in seq[name] for x in r]
        p50s = [statistics.median(r) for r in seq[name]]
        ratios = [statistics.median(rr) / statistics.median(r) for r, rr in zip(seq[name], seq[ref])]
        print(
            f"| {name} | {statistics.median(allv):.2f} | {pct(allv, 0.95):.2f} | {min(p50s):.2f}–{max(p50s):.2f} | "
            f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}–{max(ratios):.1f}) |"
        )
    print(f"\n| {a.concurrent} concurrent requests, one event loop | median ms | range ms | requests/s | x faster than nomyo |")
    print("|---|---:|---:|---:|---:|")
    for name in clients:
        ms = conc[name]
        ratios = [r / m for m, r in zip(ms, conc[ref])]
        print(
            f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f}–{max(ms):.0f} | "
            f"{a.concurrent / statistics.median(ms) * 1000:.0f} | {statistics.median(ratios):.1f}x ({min(ratios):.1f}–{max(ratios):.1f}) |"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"sequential_ms": seq, "concurrent_ms": conc, "upstream": upstream_name}, f)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A fresh client's first request: v1 against v2 (the target: "a first
request without any RSA key generation").

Every trial is a new `nomyo chat` process with a new known-servers file, so
nothing is cached: it fetches the server's keys, seals, sends, opens the
answer and exits. Three ways, interleaved trial by trial:

- v1 with no client key: the client must first make an ephemeral RSA-4096
  key pair (a random prime search, 0.2-2.5 s), then do v1;
- v1 with a saved key (`--key-dir`, made once by `nomyo keygen`): v1 without
  the key generation, for comparison;
- v2 (EHBP, X-Wing preferred): no RSA anywhere, the ephemeral HPKE key is
  part of each request.

The server is `nomyo serve --ephemeral-key` in front of the instant upstream
(`crates/nomyo-client/examples/instant_upstream.rs`, a test double that
answers at once), so the numbers are the client's and the protocol's. Times
are whole process wall-clock times (process start included, the same for
every row), median and range.

    cargo build --release -p nomyo-cli -p nomyo-client --example instant_upstream
    python3 bench/first_request.py [--trials 9]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite_config import MODEL, NOMYO, REPO, UPSTREAM  # noqa: E402
from suite_proc import start_line  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=9)
    a = ap.parse_args()

    procs = []
    tmp = tempfile.mkdtemp(prefix="nomyo-first-")
    try:
        up, upstream = start_line([UPSTREAM], r"^(http://\S+)")
        procs.append(up)
        srv, url = start_line(
            [NOMYO, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key",
             "--upstream", upstream, "--upstream-model", MODEL],
            r"listening on (https?://\S+)",
        )
        procs.append(srv)
        keys = os.path.join(tmp, "client_keys")
        subprocess.run([NOMYO, "keygen", "--out", keys, "--no-password"], check=True,
                       capture_output=True)

        ways = {
            "v1, new client key (RSA-4096 keygen)": ["--protocol", "v1"],
            "v1, saved client key": ["--protocol", "v1", "--key-dir", keys],
            "v2 (EHBP X-Wing), no RSA": ["--protocol", "v2"],
        }
        times = {w: [] for w in ways}
        for trial in range(a.trials + 1):  # trial 0 warms the page cache
            for way, extra in ways.items():
                known = os.path.join(tmp, f"known-{trial}-{len(times[way])}-{extra[1]}")
                cmd = [NOMYO, "chat", "--base-url", url, "--allow-http", "--known-servers", known,
                       "--model", MODEL, "--json", *extra, "--", "Hello"]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                dt = (time.perf_counter() - t0) * 1e3
                if p.returncode != 0:
                    raise RuntimeError(f"{way}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
                answer = json.loads(p.stdout)
                if answer["choices"][0]["message"]["content"] != "Hello!":
                    raise RuntimeError(f"{way}: unexpected answer")
                if trial > 0:
                    times[way].append(dt)

        load = os.getloadavg()
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        print(f"`python3 bench/first_request.py --trials {a.trials}`; commit {commit}; "
              f"load average {load[0]:.2f} at the end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")
        print()
        print("| first request of a fresh `nomyo chat` process | median ms | range ms |")
        print("|---|---:|---:|")
        for way, v in times.items():
            print(f"| {way} | {statistics.median(v):.0f} | {min(v):.0f}–{max(v):.0f} |")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()

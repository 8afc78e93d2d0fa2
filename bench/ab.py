#!/usr/bin/env python3
"""Before/after of two `nomyo` builds on the same machine, interleaved
(BENCHMARKS.md, "Optimisations (before/after)").

    cp target/release/nomyo /tmp/nomyo-before    # then change the code, rebuild
    python3 bench/ab.py --before /tmp/nomyo-before --after target/release/nomyo

For each build it starts `nomyo serve` (RSA-4096 ephemeral key) in front of
one shared instant upstream, both pinned to CPU 0, and drives it with the
same build's `nomyo bench` on the other CPU(s), so the whole secure path of
that build (client and server) is measured. Repetitions alternate the order
of the builds. Reported per protocol, median over repetitions:

- server CPU ms per request: the server's user + system CPU time
  (/proc/PID/stat) over the whole `nomyo bench` command, warm-up included;
- client CPU ms per request: the `nomyo bench` process's own user + system
  time (rusage);
- upstream CPU ms per request: the instant upstream's, which shares CPU 0
  with the server (so it limits the server's wall-clock throughput too);
- requests/s (wall clock: moves with the machine's other load).

CPU time per request is what an optimisation changes; on a shared machine it
moves much less than throughput. Prints a markdown table.

--client BINARY drives both servers with that build's `nomyo bench` (to
compare server changes alone, when the "before" build's load generator
differs or lacks a flag). --v1-open-every N passes `--open-every N` to the v1
runs: the load generator opens one answer in N (every answer is still read
and parsed as a v1 package, and the server's work is the same), so that one
load-generator core can keep up with the server (nomyo bench --help).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
UPSTREAM = os.path.join(REPO, "target/release/examples/instant_upstream")
CPUS = os.cpu_count() or 1
PIN = CPUS >= 2 and os.path.exists("/usr/bin/taskset")
SERVER_PIN = ["taskset", "-c", "0"] if PIN else []
CLIENT_PIN = (["taskset", "-c", "1" if CPUS == 2 else f"1-{CPUS - 1}"]) if PIN else []


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, pattern):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, m.group(1)
    p.kill()
    sys.exit(f"{cmd} did not start")


def bench_rusage(binary, server, upstream, url, known, proto, a):
    """`bench` with the client's own CPU time from wait4."""
    cmd = CLIENT_PIN + [binary, "bench", "--base-url", url, "--allow-http", "--model", "bench-model",
                        "--known-servers", known, "--json", "--timeout", "60",
                        "-c", str(a.concurrency), "--duration", str(a.seconds), "--warmup", "16"]
    cmd += ["--protocol", "v1"] if proto == "v1" else ["--protocol", "v2", "--kem", proto]
    if proto == "v1" and a.v1_open_every > 1:
        cmd += ["--open-every", str(a.v1_open_every)]
    with tempfile.TemporaryFile() as out:
        c0, u0 = cpu_seconds(server.pid), cpu_seconds(upstream.pid)
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        c1, u1 = cpu_seconds(server.pid), cpu_seconds(upstream.pid)
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"warning: {' '.join(cmd[len(CLIENT_PIN):])} exited {status}", file=sys.stderr)
    v = json.loads(text.strip().splitlines()[-1])
    n = v["requests"] + v.get("warmup", 0)
    return {"rps": v["requests_per_s"], "server": (c1 - c0) * 1e3 / n,
            "client": (ru.ru_utime + ru.ru_stime) * 1e3 / n, "upstream": (u1 - u0) * 1e3 / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--protocols", default="v1,x25519,xwing")
    ap.add_argument("--client", help="one `nomyo` build whose `bench` drives both servers")
    ap.add_argument("--v1-open-every", type=int, default=1,
                    help="v1 runs: the load generator opens one answer in N (default 1: all)")
    a = ap.parse_args()
    protos = a.protocols.split(",")
    tmp = tempfile.mkdtemp(prefix="nomyo-ab-")
    procs = []
    try:
        up, upstream = start(SERVER_PIN + [UPSTREAM], r"^(http://\S+)")
        procs.append(up)
        servers = {}
        for name in ("before", "after"):
            binary = getattr(a, name)
            srv, url = start(SERVER_PIN + [binary, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key",
                                           "--upstream", upstream, "--upstream-model", "bench-model"],
                             r"listening on (https?://\S+)")
            procs.append(srv)
            servers[name] = (binary, srv, url, os.path.join(tmp, f"known-{name}"))
        load0 = os.getloadavg()
        res = {}
        for rep in range(a.reps):
            order = ("before", "after") if rep % 2 == 0 else ("after", "before")
            for proto in protos:
                for name in order:
                    binary, srv, url, known = servers[name]
                    client = a.client or binary
                    res.setdefault((proto, name), []).append(bench_rusage(client, srv, up, url, known, proto, a))
            print(f"rep {rep + 1}/{a.reps} done", file=sys.stderr)
        load1 = os.getloadavg()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    med = lambda xs: statistics.median(xs)
    print(f"{CPUS} CPUs; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end; "
          f"c={a.concurrency}, {a.seconds:g} s per point, median of {a.reps} (range in brackets)"
          + (f"; load generator: {a.client}" if a.client else "")
          + (f"; v1 answers opened: 1 in {a.v1_open_every}" if a.v1_open_every > 1 else ""))
    print()
    print("| protocol | build | requests/s | server CPU ms/request | client CPU ms/request "
          "| upstream CPU ms/request |")
    print("|---|---|---:|---:|---:|---:|")
    for proto in protos:
        for name in ("before", "after"):
            rs = res[(proto, name)]
            cells = []
            for k, d in (("rps", 0), ("server", 3), ("client", 3), ("upstream", 3)):
                xs = [r[k] for r in rs]
                cells.append(f"{med(xs):.{d}f} ({min(xs):.{d}f}–{max(xs):.{d}f})")
            print(f"| {proto} | {name} | " + " | ".join(cells) + " |")
        b = med([r["server"] for r in res[(proto, "before")]])
        f = med([r["server"] for r in res[(proto, "after")]])
        bc = med([r["client"] for r in res[(proto, "before")]])
        fc = med([r["client"] for r in res[(proto, "after")]])
        print(f"| {proto} | after / before | | **{f / b:.3f}** | **{fc / bc:.3f}** | |")


if __name__ == "__main__":
    main()

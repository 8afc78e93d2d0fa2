#!/usr/bin/env python3
"""The benchmark suite behind bench/run.sh. Run bench/run.sh, not this.

In one run on one machine: starts the instant upstream and `nomyo serve`
(RSA-4096 ephemeral key) on 127.0.0.1, with the server side (server and
upstream) pinned to CPU 0 and every load generator on the other CPUs (when
there are at least two), and measures with `nomyo bench --json`:

- the per-request ceilings (crates/nomyo-core/examples/ceiling.rs);
- server throughput v1 / v2-X25519 / v2-X-Wing at concurrency 1, 8, 64;
- per-request latency of the Rust client vs Python nomyo 0.2.9
  (crates/nomyo-client/benches/compare_v1.py --python-client);
- the cost of encryption (secure endpoint vs plaintext straight to the upstream);
- RSS of the server (idle, under load, peak) and of the clients;
- latency and throughput as the request body grows from 1 KiB to 1 MiB;
- the core's per-operation costs (criterion: crates/nomyo-core/benches/v1.rs
  and v2.rs, short runs) beside Python `cryptography` and the reference
  client (tests/python/bench_crypto.py).

Each point is run REPS times, interleaved (every configuration once per
repetition), and the median is reported with the range. Writes
bench/results/<UTC date-time>.md and replaces the section between
<!-- bench:begin --> and <!-- bench:end --> in BENCHMARKS.md.
"""

# The parts, beside this file: suite_config.py (paths, CPU placement),
# suite_proc.py (processes, /proc, problems), suite_server.py (the servers and
# one `nomyo bench` run), suite_measure.py (ceilings and the measurements),
# suite_core.py (the criterion table), suite_report.py (the markdown).

import argparse
import datetime
import os
import sys
import time

from suite_config import CEILING, ENGINE_VS_LLAMACPP, NOMYO, REPO, UPSTREAM
from suite_core import core
from suite_measure import ceilings, run_all
from suite_proc import log, problems, run_measured
from suite_report import report
from suite_server import Suite

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="interpreter with nomyo==0.2.9")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per throughput point")
    ap.add_argument("--ceiling-seconds", type=float, default=1.5)
    ap.add_argument("--v1-open-every", type=int, default=16,
                    help="v1 throughput points: the load generator opens one answer in N "
                         "(nomyo bench --open-every; 1 = every answer)")
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument("--python-requests", type=int, default=100)
    ap.add_argument("--engine-timeout", type=float, default=1800,
                    help="seconds bench/engine_vs_llamacpp.sh may take (it builds llama.cpp on first use)")
    ap.add_argument("--no-engine", action="store_true", help="skip bench/engine_vs_llamacpp.sh")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--no-write", action="store_true", help="print the section only")
    ap.add_argument("--no-core", action="store_true", help="skip the core criterion table")
    ap.add_argument("--core-only", action="store_true", help="print the core table only (nothing written)")
    ap.add_argument("--core-seconds", type=float, default=3.0, help="criterion measurement time per benchmark")
    a = ap.parse_args()
    if a.core_only:
        print(core(a) + "".join(f"- problem: {p}\n" for p in problems))
        return
    for f in (NOMYO, CEILING, UPSTREAM):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: run bench/run.sh (it builds it)")

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    t0 = time.monotonic()

    log("ceilings")
    ceil = ceilings(a)
    if not a.no_core:
        log("core benches (criterion)")
        core_md = core(a)

    s = Suite(a)
    try:
        s.start()
        res = run_all(s, a)
    finally:
        s.close()
    load_end = os.getloadavg()
    elapsed = time.monotonic() - t0

    md = report(a, started, load_start, load_end, elapsed, ceil, s, res)
    md += ("\n### Core: per-operation cost\n\nNot in this run (`CORE=0`).\n" if a.no_core
           else "\n" + core_md)
    if a.no_engine:
        md += ("\n### Embedded engine vs llama.cpp\n\nNot in this run (`ENGINE=0`).\n")
    elif os.path.exists(ENGINE_VS_LLAMACPP) and os.access(ENGINE_VS_LLAMACPP, os.X_OK):
        log("engine vs llama.cpp")
        rc, out, err, _ = run_measured([ENGINE_VS_LLAMACPP], timeout=a.engine_timeout)
        md += "\n### Embedded engine vs llama.cpp (bench/engine_vs_llamacpp.sh)\n\n"
        md += out.strip() + "\n" if rc == 0 else f"Failed (exit {rc}): {err.strip()[:500]}\n"
    else:
        md += ("\n### Embedded engine vs llama.cpp\n\nNot in this run: "
               "`bench/engine_vs_llamacpp.sh` is absent.\n")
    if problems:
        md += "\n### Problems during this run\n\n" + "".join(f"- {p}\n" for p in problems)

    print(md)
    if a.no_write:
        return
    stamp = started.strftime("%Y-%m-%dT%H-%M-%SZ")
    os.makedirs(os.path.join(REPO, "bench/results"), exist_ok=True)
    path = os.path.join(REPO, "bench/results", f"{stamp}.md")
    with open(path, "w") as f:
        f.write(md)
    bm = os.path.join(REPO, "BENCHMARKS.md")
    text = open(bm).read() if os.path.exists(bm) else "# Benchmarks\n"
    block = f"{BEGIN}\n{md.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        lines = text.split("\n", 1)
        text = lines[0] + "\n\n" + block + "\n" + (lines[1] if len(lines) > 1 else "")
    with open(bm, "w") as f:
        f.write(text)
    log(f"wrote {os.path.relpath(path, REPO)} and BENCHMARKS.md")


if __name__ == "__main__":
    main()

"""The measurements of the benchmark suite (bench/suite.py): the per-request
ceilings, then, against one server, throughput, latency (Rust and the Python
client) and growing bodies, each repetition interleaved."""

import json
import threading
import time

from suite_config import CEILING, CLIENT_PIN, COMPARE, PROTOS
from suite_proc import log, problems, run_measured, vm


def ceilings(a):
    runs = []
    for i in range(a.reps):
        rc, out, err, _ = run_measured([CEILING, "--seconds", str(a.ceiling_seconds)])
        if rc != 0:
            problems.append(f"ceiling failed: {err.strip()[:300]}")
            continue
        runs.append(json.loads(out.strip().splitlines()[-1]))
        log(f"ceiling {i + 1}/{a.reps}: {runs[-1]}")
    out = {}
    for k in ("rsa4096_open", "hpke_open_x25519", "hpke_open_xwing"):
        for t in ("ops_per_s_1", "ops_per_s_all", "ops_per_cpu_s_1"):
            out[(k, t)] = [r[k].get(t) for r in runs]
    return out


def run_all(s, a):
    r = {"tp": {}, "lat": {}, "py": [], "rust_c1": [], "body": {}, "load_rss": []}
    sampling = {"on": False}

    def sampler():
        while True:
            if sampling["on"]:
                r["load_rss"].append(vm(s.server.pid).get("VmRSS"))
            time.sleep(0.2)

    threading.Thread(target=sampler, daemon=True).start()

    # Warm the whole path once (key fetches, pools) and record the trust.
    for p in PROTOS:
        s.bench(p, "-n", "20")

    log("throughput")
    sampling["on"] = True
    for rep in range(a.reps):
        for p in PROTOS:
            for c in (1, 8, 64):
                extra = ["--open-every", a.v1_open_every] if p == "v1" and a.v1_open_every > 1 else []
                v = s.bench(p, "-c", c, "--duration", a.seconds, "--warmup", max(c, 8), *extra)
                r["tp"].setdefault((p, c), []).append(v)
        log(f"throughput rep {rep + 1}/{a.reps} done")
    sampling["on"] = False
    r["after_load"] = vm(s.server.pid)

    log("latency: encryption cost and Rust vs Python")
    for rep in range(a.reps):
        for p in ["plain"] + PROTOS:
            url = s.upstream if p == "plain" else None
            v = s.bench(p, "-n", a.latency_requests, "--warmup", 20, url=url)
            r["lat"].setdefault(p, []).append(v)
        rc, out, err, maxrss = run_measured(
            CLIENT_PIN + [a.python, COMPARE, "--python-client", s.url,
                          "--requests", str(a.python_requests), "--first", "1"])
        if rc == 0:
            py = json.loads(out.strip().splitlines()[-1])
            py["maxrss_kib"] = maxrss
            r["py"].append(py)
        else:
            problems.append(f"Python client failed (exit {rc}): {err.strip()[-300:]}")
        log(f"latency rep {rep + 1}/{a.reps} done")

    log("body size")
    sizes = [1024, 16 * 1024, 128 * 1024, 1024 * 1024]
    for rep in range(a.reps):
        for size in sizes:
            for p in ["plain", "v1", "v2-xwing"]:
                url = s.upstream if p == "plain" else None
                n = 40 if size < 1024 * 1024 else 20
                lat = s.bench(p, "-n", n, "--warmup", 3, "--body-bytes", size, url=url)
                tp = s.bench(p, "-c", 8, "--duration", max(1.0, a.seconds / 2), "--warmup", 8,
                             "--body-bytes", size, url=url)
                r["body"].setdefault((size, p), []).append((lat, tp))
        log(f"body rep {rep + 1}/{a.reps} done")
    r["end"] = vm(s.server.pid)
    return r

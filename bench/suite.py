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

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOMYO = os.path.join(REPO, "target/release/nomyo")
CEILING = os.path.join(REPO, "target/release/examples/ceiling")
UPSTREAM = os.path.join(REPO, "target/release/examples/instant_upstream")
COMPARE = os.path.join(REPO, "crates/nomyo-client/benches/compare_v1.py")
ENGINE_VS_LLAMACPP = os.path.join(REPO, "bench/engine_vs_llamacpp.sh")
BENCH_CRYPTO = os.path.join(REPO, "tests/python/bench_crypto.py")
CRITERION = os.path.join(REPO, "target/criterion")
MODEL = "bench-model"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

CPUS = os.cpu_count() or 1
PINNED = CPUS >= 2 and os.path.exists("/usr/bin/taskset")
SERVER_PIN = ["taskset", "-c", "0"] if PINNED else []
CLIENT_CPUS = "1" if CPUS == 2 else f"1-{CPUS - 1}"
CLIENT_PIN = ["taskset", "-c", CLIENT_CPUS] if PINNED else []

problems = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def rng(xs, digits=1):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def vm(pid):
    """VmRSS and VmHWM of a process, KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                for k in ("VmRSS", "VmHWM"):
                    if line.startswith(k + ":"):
                        out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    """User + system CPU time of a process so far, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_line(cmd, pattern, timeout=180):
    """Starts cmd; returns (process, first stdout match of pattern)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd} exited before printing its address")
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, m.group(1)
    p.kill()
    raise RuntimeError(f"{cmd} did not start")


def run_measured(cmd, timeout=900):
    """Runs cmd; returns (returncode, stdout, stderr, peak RSS KiB of the child)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                # The whole process group: a script's children too.
                os.killpg(p.pid, 9)
                pid, status, usage = os.wait4(p.pid, 0)
                problems.append(f"`{' '.join(map(str, cmd))}` killed after {timeout:.0f} s")
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss


class Suite:
    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="nomyo-bench-")
        self.known = os.path.join(self.tmp, "known_servers")
        self.procs = []

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()

    def start(self):
        up, self.upstream = start_line(SERVER_PIN + [UPSTREAM], r"^(http://\S+)")
        self.procs.append(up)
        srv, self.url = start_line(
            SERVER_PIN
            + [NOMYO, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key",
               "--upstream", self.upstream, "--upstream-model", MODEL],
            r"listening on (https?://\S+)",
        )
        self.procs.append(srv)
        self.server = srv
        time.sleep(1.0)
        self.idle = vm(srv.pid)
        log(f"server {self.url} (pid {srv.pid}) idle {self.idle}")

    def bench(self, proto, *args, url=None):
        """One `nomyo bench --json` run; returns its JSON (None on failure)."""
        cmd = CLIENT_PIN + [NOMYO, "bench", "--base-url", url or self.url, "--allow-http",
                            "--model", MODEL, "--known-servers", self.known, "--json",
                            "--timeout", "120"]
        if proto == "plain":
            cmd += ["--protocol", "plain"]
        elif proto == "v1":
            cmd += ["--protocol", "v1"]
        else:
            cmd += ["--protocol", "v2", "--kem", proto.split("-")[1]]
        cmd += [str(x) for x in args]
        cpu0 = cpu_seconds(self.server.pid)
        rc, out, err, maxrss = run_measured(cmd)
        cpu1 = cpu_seconds(self.server.pid)
        try:
            v = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            problems.append(f"`{' '.join(cmd[len(CLIENT_PIN):])}` failed (exit {rc}): {err.strip()[:300]}")
            return None
        if rc != 0:
            problems.append(f"{proto} {' '.join(map(str, args))}: exit {rc}, errors {v.get('errors')}")
        v["maxrss_kib"] = maxrss
        if proto != "plain" and cpu0 is not None and cpu1 is not None:
            # Over the whole command, warm-up included.
            n = v["requests"] + v.get("warmup", 0)
            v["server_cpu_ms_per_req"] = (cpu1 - cpu0) * 1e3 / n if n else None
        return v


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


PROTOS = ["v1", "v2-x25519", "v2-xwing"]
PROTO_NAME = {"v1": "v1 (RSA-4096)", "v2-x25519": "v2 X25519", "v2-xwing": "v2 X-Wing",
              "plain": "plaintext (no encryption)"}
CEIL_KEY = {"v1": "rsa4096_open", "v2-x25519": "hpke_open_x25519", "v2-xwing": "hpke_open_xwing"}


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


def get(vs, key):
    return [v.get(key) if v else None for v in vs]


def report(a, started, load_start, load_end, elapsed, ceil, s, r):
    L = []
    w = L.append
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    w(f"## Run of {started.strftime('%Y-%m-%d %H:%M')} UTC (`{a.command}`)")
    w("")
    w(f"- Command: `{a.command}` (REPS={a.reps}, {a.seconds:g} s per throughput point); "
      f"commit {commit}{' with local changes' if dirty else ''}; {rustc}; release profile.")
    w(f"- Machine: {CPUS} CPUs ({cpu}); load average {load_start[0]:.2f} / {load_start[1]:.2f} / "
      f"{load_start[2]:.2f} at the start, {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} "
      f"at the end; the run took {elapsed / 60:.1f} min.")
    if PINNED:
        w(f"- Placement: `nomyo serve` and the instant upstream pinned to CPU 0; every load "
          f"generator (`nomyo bench`, the Python client) to CPU(s) {CLIENT_CPUS}. So the server "
          "has one core, and its ceiling is the **one-thread** ceiling.")
    else:
        w("- Placement: not pinned (one CPU or no taskset); the ceiling is the one-thread ceiling.")
    if a.v1_open_every > 1:
        w(f"- v1 throughput points: the load generator opens one answer in {a.v1_open_every} "
          f"(`nomyo bench --open-every {a.v1_open_every}`; every answer is still read whole and "
          "parsed as a v1 package with the request's payload id, and the server's work per request "
          "is the same). Opening every answer costs the load generator an RSA-4096 private-key "
          "operation per request, as much as the server's, so its one core could not keep up with "
          "the server, and its RSA work slows the server's on the neighbouring core. Latency "
          "points (c=1) open every answer.")
    w(f"- Every number is the median of {a.reps} repetitions (range in brackets), run "
      "interleaved; ratios are computed from those medians. Server: RSA-4096 ephemeral key, "
      "`examples/instant_upstream.rs` as the upstream (no model).")
    w("")

    # Ceilings.
    w("### Ceilings: the per-request crypto alone (`crates/nomyo-core/examples/ceiling.rs`)")
    w("")
    w("*CPU ms/op*: the measuring thread's own CPU time per operation (independent of the "
      "machine's other load).")
    w("")
    w("| operation (one per request on the server) | 1 thread ops/s | all cores ops/s | CPU ms/op |")
    w("|---|---:|---:|---:|")
    names = {"rsa4096_open": "v1 open: RSA-4096 OAEP decrypt + AES-GCM (256 B)",
             "hpke_open_x25519": "v2 open: HPKE X25519 setup + 1 frame (256 B)",
             "hpke_open_xwing": "v2 open: HPKE X-Wing setup + 1 frame (256 B)"}
    for k, name in names.items():
        one, all_ = ceil[(k, "ops_per_s_1")], ceil[(k, "ops_per_s_all")]
        cpu = median(ceil[(k, "ops_per_cpu_s_1")])
        w(f"| {name} | {fmt(median(one))}{rng(one)} | {fmt(median(all_))}{rng(all_)} | "
          f"{fmt(1e3 / cpu if cpu else None, 3)} |")
    w("")

    # Throughput.
    w("### Server throughput (instant upstream), beside the ceiling")
    w("")
    w("`nomyo bench --protocol P -c C --duration S` (one shared client, C tasks). *Fraction* = "
      "server requests/s ÷ the one-thread ceiling of its open operation.")
    w("")
    w("*Server CPU ms/request*: the server's CPU time (/proc/PID/stat) over each whole "
      "`nomyo bench` command, warm-up included, per request. *CPU fraction* = the open "
      "operation's CPU ms/op ÷ the server's CPU ms/request: the share of the server's own CPU "
      "that the unavoidable crypto takes, which the machine's other load does not skew.")
    w("")
    w("| protocol | concurrency | requests/s | p50 ms | p99 ms | ceiling (1 thread) | fraction of ceiling "
      "| server CPU ms/request | CPU fraction |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    tp_med = {}
    cpu_frac = {}
    cpu_med = {}
    for p in PROTOS:
        c1 = median(ceil[(CEIL_KEY[p], "ops_per_s_1")])
        ccpu = median(ceil[(CEIL_KEY[p], "ops_per_cpu_s_1")])
        for c in (1, 8, 64):
            vs = r["tp"].get((p, c), [])
            rps = get(vs, "requests_per_s")
            m = median(rps)
            tp_med[(p, c)] = m
            frac = m / c1 if m and c1 else None
            scpu = median(get(vs, "server_cpu_ms_per_req"))
            cf = (1e3 / ccpu) / scpu if ccpu and scpu else None
            cpu_frac[(p, c)] = cf
            cpu_med[(p, c)] = scpu
            w(f"| {PROTO_NAME[p]} | {c} | {fmt(m)}{rng(rps)} | {fmt(median(get(vs, 'p50_ms')), 2)} | "
              f"{fmt(median(get(vs, 'p99_ms')), 2)} | {fmt(c1)} | {fmt(frac * 100 if frac else None)}% | "
              f"{fmt(scpu, 3)} | {fmt(cf * 100 if cf else None)}% |")
    w("")

    # Latency / encryption cost.
    w("### Per-request latency (sequential, c=1) and the cost of encryption")
    w("")
    w(f"`nomyo bench -c 1 -n {a.latency_requests}` against the same server; *plaintext* is the "
      "same chat JSON straight to the upstream with no encryption (`--protocol plain`). "
      "*Added* = p50 − plaintext p50.")
    w("")
    w("| path | p50 ms | p95 ms | mean ms | added vs plaintext (p50) ms |")
    w("|---|---:|---:|---:|---:|")
    plain50 = median(get(r["lat"].get("plain", []), "p50_ms"))
    lat50 = {}
    for p in ["plain"] + PROTOS:
        vs = r["lat"].get(p, [])
        p50 = get(vs, "p50_ms")
        lat50[p] = median(p50)
        added = lat50[p] - plain50 if lat50[p] is not None and plain50 is not None else None
        w(f"| {PROTO_NAME[p]} | {fmt(lat50[p], 3)}{rng(p50, 3)} | {fmt(median(get(vs, 'p95_ms')), 3)} | "
          f"{fmt(median(get(vs, 'mean_ms')), 3)} | {'' if p == 'plain' else fmt(added, 3)} |")
    w("")

    # Rust vs Python.
    w("### Client per request: Rust (`nomyo bench`, nomyo-client) vs Python `nomyo` 0.2.9")
    w("")
    w(f"Protocol v1, sequential, same server. Python: "
      f"`crates/nomyo-client/benches/compare_v1.py --python-client URL --requests {a.python_requests}` "
      "(one warmed-up `SecureChatCompletion`, inside one event loop).")
    w("")
    py50 = [p["median_ms"] for p in r["py"]]
    py95 = [p["p95_ms"] for p in r["py"]]
    rust50 = get(r["lat"].get("v1", []), "p50_ms")
    rust95 = get(r["lat"].get("v1", []), "p95_ms")
    ratios = [p / q for p, q in zip(py50, rust50) if p and q]
    w("| client | p50 ms | p95 ms | peak RSS MiB |")
    w("|---|---:|---:|---:|")
    rust_rss = [v["maxrss_kib"] / 1024 for v in r["lat"].get("v1", []) if v]
    py_rss = [p["maxrss_kib"] / 1024 for p in r["py"]]
    w(f"| Rust nomyo-client v1 | {fmt(median(rust50), 2)}{rng(rust50, 2)} | {fmt(median(rust95), 2)} | "
      f"{fmt(median(rust_rss))} |")
    w(f"| Python nomyo 0.2.9 v1 | {fmt(median(py50), 2)}{rng(py50, 2)} | {fmt(median(py95), 2)} | "
      f"{fmt(median(py_rss))} |")
    v2r = get(r["lat"].get("v2-xwing", []), "p50_ms")
    w(f"| Rust nomyo-client v2 X-Wing (no Python peer speaks it) | {fmt(median(v2r), 2)}{rng(v2r, 2)} | "
      f"{fmt(median(get(r['lat'].get('v2-xwing', []), 'p95_ms')), 2)} | |")
    w("")
    py_ratio = median(ratios)
    w(f"Python / Rust (v1, p50, per repetition): {', '.join(f'{x:.1f}x' for x in ratios)}; "
      f"median **{fmt(py_ratio)}x**.")
    w("")

    # Memory.
    w("### Memory (VmRSS / VmHWM from /proc)")
    w("")
    mib = lambda k: f"{k / 1024:.1f}" if k else "–"
    load_rss = [x for x in r["load_rss"] if x]
    client64 = [v["maxrss_kib"] for p in PROTOS for v in r["tp"].get((p, 64), []) if v]
    w("| process | state | RSS MiB |")
    w("|---|---|---:|")
    w(f"| nomyo serve (no model) | idle, 1 s after start | {mib(s.idle.get('VmRSS'))} |")
    w(f"| nomyo serve | under the throughput load (c ≤ 64), median / max of samples | "
      f"{mib(median(load_rss))} / {mib(max(load_rss) if load_rss else None)} |")
    w(f"| nomyo serve | peak (VmHWM) after the throughput load | {mib(r['after_load'].get('VmHWM'))} |")
    w(f"| nomyo serve | peak (VmHWM) after 1 MiB bodies | {mib(r['end'].get('VmHWM'))} |")
    w(f"| nomyo bench (Rust client, 64 tasks) | peak, median over protocols and runs | "
      f"{mib(median(client64))} |")
    w(f"| Python nomyo 0.2.9 (sequential) | peak | {mib(median([p['maxrss_kib'] for p in r['py']]))} |")
    w("")
    w("The proxy (`nomyo proxy`) is not in this run.")
    w("")

    # Body size.
    w("### As the request body grows (1 KiB → 1 MiB)")
    w("")
    w("`--body-bytes B`: the plaintext chat JSON is B bytes. Latency: c=1 p50; throughput: c=8.")
    w("")
    w("| body | plaintext p50 ms | v1 p50 ms | v2 X-Wing p50 ms | plaintext req/s | v1 req/s | v2 X-Wing req/s |")
    w("|---:|---:|---:|---:|---:|---:|---:|")
    for size in sorted({k[0] for k in r["body"]}):
        cells_l, cells_t = [], []
        for p in ("plain", "v1", "v2-xwing"):
            pairs = r["body"].get((size, p), [])
            lat = [x[0] for x in pairs]
            tp = [x[1] for x in pairs]
            cells_l.append(fmt(median(get(lat, "p50_ms")), 2))
            cells_t.append(fmt(median(get(tp, "requests_per_s"))))
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        w(f"| {label} | " + " | ".join(cells_l + cells_t) + " |")
    w("")

    # Targets.
    w("### Targets")
    w("")
    w("| target | measured | met? |")
    w("|---|---|---|")
    v1_64 = tp_med.get(("v1", 64))
    rsa1 = median(ceil[("rsa4096_open", "ops_per_s_1")])
    frac = v1_64 / rsa1 if v1_64 and rsa1 else None
    xw_64, x_64 = tp_med.get(("v2-xwing", 64)), tp_med.get(("v2-x25519", 64))

    def verdict(ok):
        return "–" if ok is None else ("**met**" if ok else "**missed**")

    w(f"| Rust client ≥ 10× faster per request than nomyo 0.2.9 | {fmt(py_ratio, 2)}x (p50, v1) | "
      f"{verdict(py_ratio >= 10 if py_ratio else None)} |")
    cf64 = cpu_frac.get(("v1", 64))
    w(f"| server v1 ≥ 85% of the RSA ceiling at c=64 | {fmt(frac * 100 if frac else None)}% "
      f"({fmt(v1_64)} of {fmt(rsa1)} req/s); by CPU time {fmt(cf64 * 100 if cf64 else None)}% | "
      f"{verdict(frac >= 0.85 if frac else None)} |")
    for name, m in (("X-Wing", xw_64), ("X25519", x_64)):
        ratio = m / v1_64 if m and v1_64 else None
        key = "v2-xwing" if name == "X-Wing" else "v2-x25519"
        a1, a2 = cpu_med.get(("v1", 64)), cpu_med.get((key, 64))
        by_cpu = a1 / a2 if a1 and a2 else None
        w(f"| v2 ({name}) ≥ 5× v1 throughput (c=64) | {fmt(ratio, 2)}x ({fmt(m)} vs {fmt(v1_64)} req/s); "
          f"by server CPU per request {fmt(by_cpu, 2)}x | "
          f"{verdict(ratio >= 5 if ratio else None)} |")
    for p in ("v2-xwing", "v2-x25519"):
        added = lat50.get(p) - plain50 if lat50.get(p) is not None and plain50 is not None else None
        w(f"| encryption adds < 1 ms per request ({PROTO_NAME[p]}, p50 vs plaintext) | "
          f"{fmt(added, 3)} ms | {verdict(added < 1 if added is not None else None)} |")
    idle = s.idle.get("VmRSS")
    w(f"| server RSS < 30 MiB idle without a model | {mib(idle)} MiB | "
      f"{verdict(idle < 30 * 1024 if idle else None)} |")
    w("| embedded engine ≥ 0.95× llama.cpp | see below | |")
    w("")

    # Why a missed target is missed, from this run's own numbers.
    def op_ms(key):
        ops = median(ceil[(key, "ops_per_cpu_s_1")])
        return 1e3 / ops if ops else None

    rsa_ms, xw_ms = op_ms("rsa4096_open"), op_ms("hpke_open_xwing")
    why = []
    rust_p50 = median(rust50)
    if py_ratio and py_ratio < 10 and rsa_ms and rust_p50:
        floor = 2 * rsa_ms
        why.append(
            f"**Client 10×**: a v1 request costs two RSA-4096 private-key operations in series "
            f"(the server opens the request, the client opens the answer): {floor:.2f} ms by CPU "
            f"time ({rsa_ms:.3f} ms each, ceiling table). The Rust p50 ({rust_p50:.2f} ms) is "
            f"{rust_p50 - floor:.2f} ms above that floor, so against this run's Python p50 "
            f"({median(py50):.1f} ms) no v1 client can exceed {median(py50) / floor:.1f}×; 10× needs "
            f"Python ≥ {10 * rust_p50:.0f} ms. With v2 X-Wing the Rust client takes "
            f"{fmt(median(v2r), 2)} ms per request, "
            f"{fmt(median(py50) / median(v2r) if median(v2r) else None)}× less than Python's v1 "
            "(Python has no v2 client).")
    v1_cpu = cpu_med.get(("v1", 64))
    if frac and frac < 0.85 and rsa_ms and v1_cpu:
        why.append(
            f"**v1 at 85% of the RSA ceiling**: the server spends {v1_cpu:.3f} ms of CPU per v1 "
            f"request, of which the RSA-4096 open is {rsa_ms:.3f} ms ({rsa_ms / v1_cpu * 100:.1f}%). "
            "The rest is v1's own answer seal (an RSA public-key operation, ~0.1 ms), HTTP, JSON "
            "and the upstream hop; the wall-clock fraction is also lowered by the instant upstream "
            "and the machine's other load sharing CPU 0.")
    if xw_64 and v1_64 and xw_64 / v1_64 < 5 and xw_ms and v1_cpu and cpu_med.get(("v2-xwing", 64)):
        xw_cpu = cpu_med[("v2-xwing", 64)]
        why.append(
            f"**v2 X-Wing 5× v1**: an X-Wing open alone costs {xw_ms:.3f} ms of CPU, so with no "
            f"other cost the server could reach {v1_cpu / xw_ms:.1f}× v1 by CPU; it spends "
            f"{xw_cpu:.3f} ms per request, {xw_cpu - xw_ms:.3f} ms of it outside the HPKE open "
            "(HTTP, JSON, the upstream hop, response sealing), which caps it at "
            f"{v1_cpu / xw_cpu:.2f}×. X25519 (same path, a 3× cheaper KEM) meets the target.")
    if why:
        w("Why the missed targets are missed (this run's numbers; profiles and the before/after "
          "of the optimisations are in the sections after the run):")
        w("")
        for x in why:
            w(f"- {x}")
        w("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()

"""The report of the benchmark suite (bench/suite.py): the markdown section of a
run (machine, ceilings, throughput, latency, Rust vs Python, memory, body
size, targets and why a missed one is missed), medians and ranges."""

import statistics
import subprocess

from suite_config import CEIL_KEY, CLIENT_CPUS, CPUS, PINNED, PROTO_NAME, PROTOS, REPO


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

"""The servers the benchmark suite measures (bench/suite.py): the instant
upstream and `nomyo serve` in front of it, and one `nomyo bench --json` run
against them with the server's CPU time and the client's peak RSS."""

import json
import os
import tempfile
import time

from suite_config import CLIENT_PIN, MODEL, NOMYO, SERVER_PIN, UPSTREAM
from suite_proc import cpu_seconds, log, problems, run_measured, start_line, vm


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

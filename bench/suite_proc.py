"""Processes for the benchmark suite (bench/suite.py): starting a server and
reading its address, running a command with its peak RSS and a time limit,
/proc readings (RSS, CPU time), the log, and the run's list of problems."""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time

problems = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def start_line(cmd, pattern, timeout=180, env=None):
    """Starts cmd (with env, when given); returns (process, first stdout
    match of pattern)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
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

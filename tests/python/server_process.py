"""Runs `nomyo serve` as a child process for the tests: port 0, waits for its
`listening on URL` line, keeps everything it prints (for the canary check) and
stops it with SIGTERM."""

import os
import re
import signal
import subprocess
import threading
import time

LISTENING = re.compile(r"listening on (https?://\S+)")


class ServerFailed(RuntimeError):
    pass


class NomyoServer:
    def __init__(self, nomyo_bin, args, env=None, start_timeout=120, command="serve", listen="127.0.0.1:0"):
        # command="proxy" runs `nomyo proxy`, which prints the same line.
        self.args = [nomyo_bin, command, "--listen", listen, *map(str, args)]
        self.stdout_lines = []
        self.stderr_lines = []
        self._ready = threading.Event()
        self.url = None
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, False), daemon=True).start()
        deadline = time.monotonic() + start_timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the pumps drain
                raise ServerFailed(
                    f"nomyo serve exited with {self.proc.returncode} before listening:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"nomyo serve did not print 'listening on' in {start_timeout} s:\n{self.output()}")

    def _pump(self, stream, sink, watch):
        for line in stream:
            sink.append(line)
            if watch and self.url is None:
                m = LISTENING.search(line)
                if m:
                    self.url = m.group(1).rstrip("/")
                    self._ready.set()

    def has_line(self, predicate, timeout=10) -> bool:
        """Whether a line it printed (on either stream) satisfies predicate,
        waiting up to timeout seconds: stdout's `listening on` can be read
        before the stderr lines printed ahead of it."""
        deadline = time.monotonic() + timeout
        while True:
            if any(predicate(line) for line in self.stderr_lines + self.stdout_lines):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def output(self) -> str:
        return "".join(self.stdout_lines) + "".join(self.stderr_lines)

    def stop(self, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise ServerFailed(f"nomyo serve did not stop within {timeout} s of SIGTERM")
        time.sleep(0.1)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def run_to_exit(nomyo_bin, args, timeout=120):
    """Runs `nomyo serve ARGS` expecting it to fail at start-up; returns CompletedProcess."""
    return subprocess.run(
        [nomyo_bin, "serve", "--listen", "127.0.0.1:0", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

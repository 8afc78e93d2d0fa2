"""Shared fixtures for the Python-side interoperability tests.

The Rust binaries come from the environment (NOMYO_BIN, V1TOOL_BIN,
HPKETOOL_BIN) or are built here with cargo on first use, so that
`pytest tests/python` also works on its own from the repository root.
"""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from server_process import NomyoServer
from upstream_double import UpstreamDouble

ROOT = Path(__file__).resolve().parents[2]


def _cargo_build(args):
    """Builds with cargo and returns {target name: executable path}."""
    out = subprocess.run(
        ["cargo", "build", "--message-format=json-render-diagnostics", *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
    ).stdout
    exes = {}
    for line in out.decode().splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            exes[msg["target"]["name"]] = msg["executable"]
    return exes


def _binary(env_var, cargo_args, target):
    path = os.environ.get(env_var)
    if path:
        assert os.access(path, os.X_OK), f"{env_var}={path} is not executable"
        return path
    exes = _cargo_build(cargo_args)
    assert target in exes, f"cargo did not produce {target}: {exes}"
    return exes[target]


@pytest.fixture(scope="session")
def nomyo_bin():
    """The `nomyo` CLI binary."""
    return _binary("NOMYO_BIN", ["-p", "nomyo-cli", "--bin", "nomyo"], "nomyo")


@pytest.fixture(scope="session")
def v1tool_bin():
    """The nomyo-core `v1tool` example (seal/open/quote/unquote via stdin/stdout)."""
    return _binary("V1TOOL_BIN", ["-p", "nomyo-core", "--example", "v1tool"], "v1tool")


@pytest.fixture(scope="session")
def hpketool_bin():
    """The nomyo-core `hpketool` example (seals a v2 request body to an HPKE key)."""
    return _binary("HPKETOOL_BIN", ["-p", "nomyo-core", "--example", "hpketool"], "hpketool")


@pytest.fixture(scope="session")
def v1tool(v1tool_bin):
    """Runs v1tool; returns the CompletedProcess (stdout bytes, stderr text)."""

    def run(*args, stdin=b"", check=True):
        p = subprocess.run([v1tool_bin, *map(str, args)], input=stdin, capture_output=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"v1tool {args} failed ({p.returncode}): {p.stderr.decode()}")
        return p

    return run


@pytest.fixture(scope="session")
def nomyo(nomyo_bin):
    """Runs the nomyo CLI; returns the CompletedProcess with text output."""

    def run(*args, check=False, env=None, timeout=120):
        return subprocess.run(
            [nomyo_bin, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )

    return run




@pytest.fixture(scope="module")
def upstream():
    """An OpenAI-compatible upstream double on 127.0.0.1 (upstream_double.py),
    one per test module."""
    u = UpstreamDouble()
    yield u
    u.close()


@pytest.fixture(scope="session")
def embedded(tmp_path_factory, nomyo_bin):
    """`nomyo serve` with the embedded model (no upstream, no API key), once
    /health says it is ready; one for the whole session (test_proxy.py,
    test_cli_v2.py), so the model is loaded once. It finds the model as
    `nomyo serve` does ($NOMYO_MODEL_FILE, else ./models/, where
    scripts/fetch-model.sh puts it)."""
    d = tmp_path_factory.mktemp("embedded")
    key_dir = d / "keys"
    # Every tier open, as without [tiers]; maximum without its default
    # require_attestation, this server having no TPM (test_cli_v2.py asks
    # for maximum).
    (d / "nomyo.toml").write_text(
        '[tiers.standard]\nmodels = ["*"]\n[tiers.high]\nmodels = ["*"]\n'
        '[tiers.maximum]\nmodels = ["*"]\nrequire_attestation = false\n'
    )
    with NomyoServer(nomyo_bin, ["--config", d / "nomyo.toml", "--key-dir", key_dir, "--no-password"]) as s:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = json.load(urllib.request.urlopen(s.url + "/health", timeout=5))
                if health.get("status") == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the embedded model did not become ready"
            time.sleep(0.2)
        yield s


@pytest.fixture(scope="session")
def nomyo_rs():
    """The Python package nomyo_rs (python/, the Rust client for Python).
    Its tests skip when it is not installed (`pip install ./python`),
    unless NOMYO_REQUIRE_PY_BINDING=1 (CI), which makes that a failure."""
    try:
        import nomyo_rs as module
    except ImportError as e:
        if os.environ.get("NOMYO_REQUIRE_PY_BINDING") == "1":
            pytest.fail(f"NOMYO_REQUIRE_PY_BINDING=1 but nomyo_rs cannot be imported: {e}")
        pytest.skip(f"nomyo_rs is not installed (pip install ./python): {e}")
    return module

"""Shared fixtures for the Python-side interoperability tests.

The Rust binaries come from the environment (NOMYO_BIN, V1TOOL_BIN,
HPKETOOL_BIN) or are built here with cargo on first use, so that
`pytest tests/python` also works on its own from the repository root.
"""

import base64
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server_process import NomyoServer
from upstream_double import UpstreamDouble

ROOT = Path(__file__).resolve().parents[2]
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


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


def fingerprint(public_key) -> str:
    """The project's fingerprint, computed independently: sha256 over DER SPKI."""
    import hashlib

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def public_pem(key) -> bytes:
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def py_seal(plaintext: bytes, public_key) -> bytes:
    """A v1 package sealed by Python `cryptography`, as docs/PROTOCOL.md describes."""
    aes_key, nonce = os.urandom(32), os.urandom(12)
    ct = AESGCM(aes_key).encrypt(nonce, plaintext, None)
    package = {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": {
            "ciphertext": base64.b64encode(ct[:-16]).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "tag": base64.b64encode(ct[-16:]).decode(),
        },
        "encrypted_aes_key": base64.b64encode(public_key.encrypt(aes_key, OAEP)).decode(),
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }
    return json.dumps(package).encode()


def strict_b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def py_open(package_bytes: bytes, private_key) -> bytes:
    """Opens a v1 package with Python `cryptography`, checking its shape strictly."""
    p = json.loads(package_bytes)
    assert p["version"] == "1.0"
    assert p["algorithm"] == "hybrid-aes256-rsa4096"
    assert p["key_algorithm"] == "RSA-OAEP-SHA256"
    assert p["payload_algorithm"] == "AES-256-GCM"
    assert set(p["encrypted_payload"]) == {"ciphertext", "nonce", "tag"}
    nonce = strict_b64(p["encrypted_payload"]["nonce"])
    tag = strict_b64(p["encrypted_payload"]["tag"])
    wrapped = strict_b64(p["encrypted_aes_key"])
    assert len(nonce) == 12 and len(tag) == 16
    assert len(wrapped) == private_key.key_size // 8
    aes_key = private_key.decrypt(wrapped, OAEP)
    assert len(aes_key) == 32
    ct = strict_b64(p["encrypted_payload"]["ciphertext"])
    return AESGCM(aes_key).decrypt(nonce, ct + tag, None)


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

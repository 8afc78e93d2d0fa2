"""Fixtures and helpers shared by the tests of the Python package nomyo_rs
(test_py_binding_*.py): `nomyo serve` in front of the OpenAI-compatible
upstream double (streaming), with an API key; a fresh known-servers file per
test; and the helpers that build a client and send a request.

A test module uses a fixture by binding it to its name there
(`server = py_binding_fixtures.server`); a module-scoped one is then one per
test module. The nomyo_rs tests are skipped when nomyo_rs is not installed,
unless NOMYO_REQUIRE_PY_BINDING=1 (the `nomyo_rs` fixture, conftest.py).
"""

import asyncio
import hashlib
import urllib.request
import uuid
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from server_process import NomyoServer
from test_serve import config_toml
from upstream_double import UpstreamDouble

API_KEY = "test-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def streaming_upstream():
    u = UpstreamDouble(streaming=True)
    yield u
    u.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, nomyo_bin, streaming_upstream, nomyo_rs):
    d = tmp_path_factory.mktemp("pybinding")
    (d / "nomyo.toml").write_text(config_toml(streaming_upstream))
    (d / "api_keys").write_text(API_KEY + "\n")
    with NomyoServer(
        nomyo_bin,
        ["--config", d / "nomyo.toml", "--key-dir", d / "server_keys", "--no-password", "--api-key-file", d / "api_keys"],
    ) as s:
        yield s


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    # The default known-servers file lives under XDG_CONFIG_HOME: never the
    # user's, and a fresh one per test (ports are reused with new keys).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(autouse=True)
def fresh_upstream(streaming_upstream):
    streaming_upstream.reset()
    streaming_upstream.chunk_delay = 0.0
    yield


def server_fingerprint(url) -> str:
    pem = urllib.request.urlopen(url + "/pki/public_key", timeout=10).read()
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def chat(module, url, **kw):
    kw.setdefault("api_key", API_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.SecureChatCompletion(base_url=url, allow_http=True, **kw)


def run(coro):
    return asyncio.run(coro)


def hello(client, content="hello", **kw):
    kw.setdefault("model", "small-model")
    return client.create(messages=[{"role": "user", "content": content}], **kw)

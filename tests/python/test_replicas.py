"""Two `nomyo serve` processes as stateless replicas: one key set
made by `nomyo keygen --server`, one replay window in a real Redis
(`redis-server`, started here on loopback), and the unmodified reference
client `nomyo` 0.2.9.

A request the reference client sent to replica A is captured as it went on
the wire (the client's own httpx call) and replayed, byte for byte, to
replica B: with the shared store B refuses it (409) and the upstream ran once.

Without `redis-server` the tests are skipped, unless NOMYO_REQUIRE_REDIS=1
(CI), which makes them fail.
"""

import asyncio
import os
import shutil
import socket
import subprocess
import time
import warnings

import httpx
import pytest
from client_package import IS_RUST, SecureChatCompletion
from server_process import NomyoServer

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("NOMYO_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed but NOMYO_REQUIRE_REDIS=1")
        pytest.skip("redis-server is not installed (apt install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, nomyo_bin, upstream, redis_url):
    keys = tmp_path_factory.mktemp("replicas") / "server_keys"
    out = subprocess.run(
        [nomyo_bin, "keygen", "--server", "--no-password", "--bits", "2048", "--out", str(keys)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "HPKE keys:" in out.stdout
    args = [
        "--key-dir", keys,
        "--upstream", upstream.url,
        "--upstream-model", "small-model",
        "--replay-redis-url", redis_url,
        "--key-reload-every", "1s",
    ]
    with NomyoServer(nomyo_bin, args) as a, NomyoServer(nomyo_bin, args) as b:
        yield a, b


def client(url):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SecureChatCompletion(base_url=url, allow_http=True)


def get(url: str) -> bytes:
    return httpx.get(url, timeout=10).content


def test_both_replicas_publish_the_same_keys(replicas):
    a, b = replicas
    assert get(a.url + "/pki/public_key") == get(b.url + "/pki/public_key")
    assert get(a.url + "/.well-known/hpke-keys") == get(b.url + "/.well-known/hpke-keys")


@pytest.mark.skipif(
    IS_RUST,
    reason="captures the sealed request through httpx, which nomyo_rs does not use "
    "(the replay across replicas is tested in crates/nomyo-server/tests/server/replicas.rs)",
)
def test_a_request_captured_at_one_replica_is_refused_by_the_other(replicas, upstream, monkeypatch):
    a, b = replicas
    upstream.reset()
    captured = []
    real_post = httpx.AsyncClient.post

    async def capturing_post(self, url, *args, **kwargs):
        captured.append((url, dict(kwargs.get("headers") or {}), kwargs.get("content")))
        return await real_post(self, url, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "post", capturing_post)
    answer = asyncio.run(
        client(a.url).create(model="small-model", messages=[{"role": "user", "content": "replicated"}])
    )
    monkeypatch.undo()
    assert answer["choices"][0]["message"]["content"]
    assert len(captured) == 1 and len(upstream.requests) == 1
    url, headers, body = captured[0]
    assert url.startswith(a.url) and body

    # The same bytes, same headers, to replica B: refused, the model never ran.
    replay = httpx.post(url.replace(a.url, b.url), headers=headers, content=body, timeout=30)
    assert replay.status_code == 409, replay.text
    assert "replayed" in replay.json()["detail"]
    assert len(upstream.requests) == 1

    # And B itself serves the reference client normally.
    answer = asyncio.run(
        client(b.url).create(model="small-model", messages=[{"role": "user", "content": "at b"}])
    )
    assert answer["choices"][0]["message"]["content"]
    assert len(upstream.requests) == 2

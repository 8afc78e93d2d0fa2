"""The published EHBP client `tinfoil-ehbp` (an independent implementation of
protocol v2's request and response encryption) against `nomyo serve`, in front
of the OpenAI-compatible upstream double. Everything on 127.0.0.1, OS ports.

The client reads only the first key config (X25519), sends 64 KiB request
frames, and decrypts the bound response itself: a correct answer proves the
server's HPKE, framing and response keys match the spec, not just our client.
"""

import json
import uuid

import pytest
from ehbp import Client, KeyConfigMismatchError
from server_process import NomyoServer
from test_serve import config_toml
from upstream_double import UpstreamDouble

API_KEY = "v2-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    yield


@pytest.fixture(scope="module")
def server(tmp_path_factory, nomyo_bin, upstream):
    d = tmp_path_factory.mktemp("serve_v2")
    (d / "nomyo.toml").write_text(config_toml(upstream))
    (d / "api_keys").write_text(API_KEY + "\n")
    with NomyoServer(
        nomyo_bin,
        ["--config", d / "nomyo.toml", "--key-dir", d / "server_keys", "--no-password", "--api-key-file", d / "api_keys", "-vv"],
        env={"RUST_LOG": "trace"},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def ehbp(server):
    c = Client.discover(server.url)
    yield c
    c.close()


def chat(prompt, **kw):
    return {"model": "small-model", "messages": [{"role": "user", "content": prompt}], **kw}


def test_plain_request(ehbp, upstream):
    prompt = "Capital of France? é\u4e2d " + "x" * 70000  # more than one 64 KiB request frame
    r = ehbp.post("/v1/chat/completions", json_body=chat(prompt, temperature=0.5), headers=AUTH)
    assert r.status_code == 200, r.content
    assert "ehbp-response-nonce" in r.headers
    v = r.json()
    assert v["object"] == "chat.completion"
    assert v["choices"][0]["message"]["content"] == f"echo: {prompt}"
    meta = v["_metadata"]
    assert meta["protocol"] == "v2"
    assert meta["hpke"]["kem"] == "x25519" and meta["hpke"]["post_quantum"] is False
    assert meta["security_tier"] == "standard"
    # The upstream got the decrypted request with its parameters.
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["body"]["messages"][0]["content"] == prompt
    assert upstream.requests[0]["body"]["temperature"] == 0.5


def test_streamed_request(ehbp, upstream):
    with ehbp.stream("POST", "/v1/chat/completions", json_body=chat("stream me", stream=True), headers=AUTH) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        text = b"".join(r.iter_bytes()).decode()
    events = [e[len("data: "):] for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == "echo: stream me"
    assert chunks[0]["_metadata"]["hpke"]["kem"] == "x25519"
    # The upstream was asked to stream, once; this double ignores "stream" and
    # answers one JSON completion, which the server sends as one chunk.
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["body"].get("stream") is True
    assert len(chunks) == 1


def test_streamed_from_a_streaming_upstream(tmp_path, nomyo_bin):
    """The upstream streams word by word, 0.3 s apart: tinfoil-ehbp decrypts
    each chunk as it arrives, the first long before the last is sent."""
    import time

    up = UpstreamDouble(streaming=True, chunk_delay=0.3)
    try:
        (tmp_path / "nomyo.toml").write_text(config_toml(up))
        args = ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048"]
        with NomyoServer(nomyo_bin, args) as s:
            c = Client.discover(s.url)
            prompt = "one two three four five"
            arrivals, text = [], ""
            start = time.monotonic()
            with c.stream("POST", "/v1/chat/completions", json_body=chat(prompt, stream=True)) as r:
                assert r.status_code == 200
                for piece in r.iter_bytes():
                    arrivals.append(time.monotonic() - start)
                    text += piece.decode()
            c.close()
        events = [e[len("data: "):] for e in text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(ch["choices"][0]["delta"]["content"] for ch in chunks) == f"echo: {prompt}"
        assert len(chunks) == len(f"echo: {prompt}".split(" "))
        assert up.requests[0]["body"]["stream"] is True
        # 6 chunks 0.3 s apart: the first arrived well before the stream ended.
        assert arrivals[0] < arrivals[-1] - 1.0, arrivals
    finally:
        up.close()


def test_canary_never_in_server_logs(server, ehbp, upstream):
    import time

    canary = "canary-" + uuid.uuid4().hex
    for body in (chat(canary), chat(canary, stream=True)):
        r = ehbp.post("/v1/chat/completions", json_body=body, headers=AUTH)
        assert r.status_code == 200
        assert canary in r.content.decode()
    # The requests were logged (by id), just not their content.
    meta = json.loads(ehbp.post("/v1/chat/completions", json_body=chat("x"), headers=AUTH).content)["_metadata"]
    time.sleep(0.3)
    logs = server.output()
    assert meta["payload_id"] in logs, "request not in the logs; is -vv honoured?"
    assert canary not in logs
    assert API_KEY not in logs


def test_unknown_key_id_is_a_key_config_mismatch(ehbp, upstream):
    with pytest.raises(KeyConfigMismatchError):
        ehbp.post("/v1/chat/completions", json_body=chat("x"), headers={**AUTH, "Nomyo-Key-Id": "200"})
    assert upstream.requests == []


def test_maximum_tier_refuses_x25519(ehbp, upstream):
    r = ehbp.post("/v1/chat/completions", json_body=chat("x"), headers={**AUTH, "X-Security-Tier": "maximum"})
    assert r.status_code == 403
    assert "X-Wing" in json.loads(r.content)["detail"]
    assert upstream.requests == []


def test_wrong_api_key_is_401(ehbp, upstream):
    r = ehbp.post("/v1/chat/completions", json_body=chat("x"), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert upstream.requests == []


def test_hpke_keys_persist_in_the_key_dir(tmp_path, nomyo_bin, upstream):
    import os
    import stat
    import urllib.request

    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    args = ["--config", tmp_path / "nomyo.toml", "--key-dir", tmp_path / "keys", "--no-password"]
    seen = []
    for _ in range(2):
        with NomyoServer(nomyo_bin, args) as s:
            with urllib.request.urlopen(s.url + "/.well-known/hpke-keys", timeout=10) as r:
                assert r.headers["content-type"] == "application/ohttp-keys"
                seen.append(r.read())
    assert seen[0] == seen[1]
    # X25519 config first: an even key id, KEM 0x0020; X-Wing next with the next id.
    assert seen[0][0] % 2 == 0 and seen[0][1:3] == b"\x00\x20"
    # One file, both private keys with their ids: "NHPK" 0x01, then 2 x (id, kem, 32 bytes).
    st = os.stat(tmp_path / "keys" / "hpke_keys.key")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == 5 + 2 * 35


def test_rotation_gives_422_then_success_after_refetch(tmp_path, nomyo_bin, upstream):
    """SIGHUP rotates the HPKE keys: the old config still works during the
    grace period, then tinfoil-ehbp (which sends no Nomyo-Key-Id) gets the
    EHBP 422 key-config problem; a client that refetches the keys succeeds."""
    import signal
    import time
    import urllib.request

    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    args = ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048", "--hpke-grace", "2s"]

    def keys(url):
        with urllib.request.urlopen(url + "/.well-known/hpke-keys", timeout=10) as r:
            return r.read()

    with NomyoServer(nomyo_bin, args) as s:
        before = keys(s.url)
        old = Client.discover(s.url)
        assert old.post("/v1/chat/completions", json_body=chat("before")).status_code == 200
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while keys(s.url) == before:
            assert time.monotonic() < deadline, "keys not rotated after SIGHUP"
            time.sleep(0.05)
        rotated_at = time.monotonic()
        after = keys(s.url)
        assert after[0] != before[0], "new key ids"
        # In grace: the old config still opens.
        r = old.post("/v1/chat/completions", json_body=chat("in grace"))
        assert time.monotonic() - rotated_at < 2, "too slow to test the grace period"
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "echo: in grace"
        # After it: the old key is erased, 422 key-config problem.
        time.sleep(2.3 - (time.monotonic() - rotated_at))
        upstream.reset()
        with pytest.raises(KeyConfigMismatchError):
            old.post("/v1/chat/completions", json_body=chat("too late"))
        assert upstream.requests == []
        old.close()
        # The client refetches the keys and retries: success.
        new = Client.discover(s.url)
        r = new.post("/v1/chat/completions", json_body=chat("after refetch"))
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "echo: after refetch"
        new.close()

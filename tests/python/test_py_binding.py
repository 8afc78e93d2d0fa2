"""The Python package nomyo_rs (python/: the Rust client behind the interface
of the reference client `nomyo` 0.2.9) against `nomyo serve` in front of the
OpenAI-compatible upstream double, and against a scripted fake server for the
error statuses.

Covered: the drop-in interface (signatures and defaults as `nomyo`'s), the
exception classes (names, bases, status codes) and the mapping of every
status, 401 with a wrong API key, 403, SecurityError on a pin mismatch and on
a changed server key, protocols v1, v2 and auto, tiers, OpenAI parameters
passed through, streaming with an early exit, cancellation (asyncio.wait_for),
32 concurrent requests in one event loop, and key files written by each
package loaded by the other (with and without a password) and used for
requests.

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import asyncio
import hashlib
import inspect
import json
import threading
import time
import urllib.request
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nomyo
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nomyo.SecureCompletionClient import SecureCompletionClient as RefClient
from server_process import NomyoServer
from test_serve import config_toml
from upstream_double import UpstreamDouble

API_KEY = "test-key-" + uuid.uuid4().hex

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

EXCEPTIONS = {
    "APIError": 0,
    "AuthenticationError": 401,
    "InvalidRequestError": 400,
    "ForbiddenError": 403,
    "RateLimitError": 429,
    "ServerError": 500,
    "ServiceUnavailableError": 503,
    "APIConnectionError": None,
    "SecurityError": None,
}


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


# --- the interface ---------------------------------------------------------


@pytest.mark.parametrize(
    "module,path",
    [
        ("", "SecureChatCompletion.__init__"),
        ("", "SecureChatCompletion.create"),
        ("", "SecureChatCompletion.acreate"),
        (".nomyo", "SecureChatCompletion.create"),
        (".SecureCompletionClient", "SecureCompletionClient.__init__"),
        (".SecureCompletionClient", "SecureCompletionClient.generate_keys"),
        (".SecureCompletionClient", "SecureCompletionClient.load_keys"),
    ],
)
def test_signatures_start_with_nomyos(nomyo_rs, module, path):
    """Every parameter of nomyo's, in the same order with the same default,
    at the same import path; what nomyo_rs adds is keyword-only."""
    import importlib

    def sig(package):
        obj = importlib.import_module(package + module)
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj, inspect.signature(obj)

    (_, ref), (fn, ours) = sig("nomyo"), sig("nomyo_rs")
    ref_params = list(ref.parameters.values())
    our_params = list(ours.parameters.values())
    assert [(p.name, p.default, p.kind) for p in our_params[: len(ref_params)]] == [
        (p.name, p.default, p.kind) for p in ref_params
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in our_params[len(ref_params) :])
    if path.endswith("create"):
        assert inspect.iscoroutinefunction(fn)
    # `from nomyo_rs import SecureCompletionClient` is the class.
    assert nomyo_rs.SecureCompletionClient is importlib.import_module("nomyo_rs.SecureCompletionClient").SecureCompletionClient


def test_exception_classes_match_nomyos(nomyo_rs):
    import nomyo.SecureCompletionClient as ref_module

    for name, status in EXCEPTIONS.items():
        ours, ref = getattr(nomyo_rs, name), getattr(nomyo, name)
        assert ours.__name__ == ref.__name__
        assert [b.__name__ for b in ours.__mro__] == [b.__name__ for b in ref.__mro__], name
        if status is not None:
            e, r = ours("m"), ref("m")
            assert e.status_code == r.status_code == (status or None)
            assert str(e) == str(r) == "m" and e.message == "m" and e.error_details is None
    assert set(nomyo.__all__) - set(dir(nomyo_rs)) <= {
        "get_memory_protection_info",
        "disable_secure_memory",
        "enable_secure_memory",
        "secure_bytearray",
        "secure_bytes",
        "SecureBuffer",
    }
    assert ref_module.APIError is nomyo.APIError


# --- requests against nomyo serve ------------------------------------------


@pytest.mark.parametrize("protocol,algorithm", [("v1", "hybrid-aes256-rsa4096"), ("v2", "ehbp-"), ("auto", "ehbp-")])
def test_protocols(nomyo_rs, server, streaming_upstream, protocol, algorithm):
    c = chat(nomyo_rs, server.url, protocol=protocol)
    prompt = f"over {protocol}: é\u4e2d"
    r = run(hello(c, prompt, temperature=0.2, max_tokens=17, seed=7, logit_bias={"50": -1}))
    assert r["choices"][0]["message"]["content"] == f"echo: {prompt}"
    assert r["object"] == "chat.completion" and r["usage"]["total_tokens"] == 10
    meta = r["_metadata"]
    assert meta["is_encrypted"] is True
    assert meta["encryption_algorithm"].startswith(algorithm)
    assert meta["payload_id"] and meta["security_tier"] == "standard"
    # Every parameter reached the upstream, unchanged.
    body = streaming_upstream.requests[-1]["body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 17 and body["seed"] == 7
    assert body["logit_bias"] == {"50": -1}


def test_the_answer_dict_is_nomyos(nomyo_rs, server):
    """The same keys, nested, as nomyo's answer (v1, where nomyo speaks)."""
    ours = run(hello(chat(nomyo_rs, server.url, protocol="v1")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_client = nomyo.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=API_KEY)
    ref = run(hello(ref_client))

    def shape(v):
        if isinstance(v, dict):
            return {k: shape(x) for k, x in v.items() if k not in ("id", "created")}
        if isinstance(v, list):
            return [shape(x) for x in v]
        return type(v).__name__

    assert shape(ours) == shape(ref)


def test_tools_and_response_format_pass_through(nomyo_rs, server, streaming_upstream):
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    c = chat(nomyo_rs, server.url)
    r = run(
        hello(
            c,
            "weather?",
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            response_format={"type": "json_object"},
        )
    )
    call = r["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and r["choices"][0]["finish_reason"] == "tool_calls"
    body = streaming_upstream.requests[-1]["body"]
    assert body["tools"] == [tool] and body["response_format"] == {"type": "json_object"}


def test_tiers(nomyo_rs, server):
    c = chat(nomyo_rs, server.url)
    for tier in ("standard", "high", "maximum"):
        assert run(hello(c, security_tier=tier))["_metadata"]["security_tier"] == tier
    with pytest.raises(nomyo_rs.ForbiddenError) as e:
        run(hello(c, model="big-model", security_tier="high"))
    assert e.value.status_code == 403 and isinstance(e.value, nomyo_rs.APIError)
    with pytest.raises(ValueError, match="Invalid security_tier"):
        run(hello(c, security_tier="extreme"))
    # protocol v1 (explicit) serves the high tier too.
    v1 = chat(nomyo_rs, server.url, protocol="v1")
    assert run(hello(v1, security_tier="high"))["_metadata"]["security_tier"] == "high"


def test_wrong_or_missing_api_key_is_401(nomyo_rs, server):
    for key in ("wrong-" + API_KEY, None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = nomyo_rs.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=key)
        with pytest.raises(nomyo_rs.AuthenticationError) as e:
            run(hello(c))
        assert e.value.status_code == 401
        assert API_KEY not in str(e.value)
    # A per-request api_key overrides the client's, as in nomyo.
    c = chat(nomyo_rs, server.url, api_key="wrong")
    assert run(hello(c, api_key=API_KEY))["_metadata"]["is_encrypted"] is True


def test_unknown_model_is_an_api_error(nomyo_rs, server):
    with pytest.raises(nomyo_rs.APIError) as e:
        run(hello(chat(nomyo_rs, server.url, protocol="v1"), model="no-such-model"))
    assert e.value.status_code in (400, 404)


def test_pin_mismatch_is_a_security_error(nomyo_rs, server, streaming_upstream):
    good = server_fingerprint(server.url)
    bad = "sha256:" + "00" * 32
    for protocol in ("v1", "v2", "auto"):
        c = chat(nomyo_rs, server.url, pins=[bad], protocol=protocol)
        with pytest.raises(nomyo_rs.SecurityError, match="pin mismatch"):
            run(hello(c))
    assert streaming_upstream.requests == []
    assert run(hello(chat(nomyo_rs, server.url, pins=[good])))["_metadata"]["is_encrypted"]
    with pytest.raises(ValueError, match="fingerprint"):
        run(hello(chat(nomyo_rs, server.url, pins=["not-a-fingerprint"])))


def test_attestation_required_refuses_an_unattested_server_and_bad_trust_inputs(
    nomyo_rs, server, streaming_upstream, tmp_path
):
    # This server has no TPM and no confidential-VM evidence: nothing is sent.
    for protocol in ("v2", "auto"):
        c = chat(nomyo_rs, server.url, protocol=protocol, require_attestation=True)
        with pytest.raises(nomyo_rs.SecurityError, match="not attested"):
            run(hello(c))
    # Attestation cannot authenticate a v1 answer.
    with pytest.raises(nomyo_rs.SecurityError):
        run(hello(chat(nomyo_rs, server.url, protocol="v1", require_attestation=True)))
    assert streaming_upstream.requests == []
    # Trust inputs that cannot be used are the caller's error, named.
    policy = tmp_path / "policy.toml"
    policy.write_text("[sev_snp]\nvmpl = 9\n")
    collateral = tmp_path / "collateral.json"
    collateral.write_text("{}")
    for kw, want in (
        (dict(attestation_policy=str(policy)), "VMPL"),
        (dict(attestation_policy=str(tmp_path / "missing.toml")), "policy file"),
        (dict(tdx_collateral=str(collateral)), "collateral"),
    ):
        c = chat(nomyo_rs, server.url, require_attestation=True, **kw)
        with pytest.raises(ValueError, match=want):
            run(hello(c))
    assert streaming_upstream.requests == []


def test_known_servers_file_records_and_refuses_a_changed_key(nomyo_rs, server, tmp_path):
    known = tmp_path / "known_servers"
    run(hello(chat(nomyo_rs, server.url, known_servers=str(known))))
    text = known.read_text()
    fp = server_fingerprint(server.url)
    assert server.url in text and fp in text
    # Someone else's key on record for this origin: refused, nothing sent.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    other_fp = "sha256:" + hashlib.sha256(der).hexdigest()
    known.write_text(text.replace(fp, other_fp))
    with pytest.raises(nomyo_rs.SecurityError, match="HAS CHANGED"):
        run(hello(chat(nomyo_rs, server.url, known_servers=str(known), protocol="v1")))


def test_plain_http_elsewhere_than_loopback_needs_allow_http(nomyo_rs):
    c = nomyo_rs.SecureChatCompletion(base_url="http://192.0.2.1:9", api_key="k")
    with pytest.raises(nomyo_rs.SecurityError):
        run(hello(c))


def test_unreachable_server_is_an_api_connection_error(nomyo_rs):
    with socket_free_port() as port:
        pass
    c = chat(nomyo_rs, f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(nomyo_rs.APIConnectionError):
        run(hello(c))


class socket_free_port:
    def __enter__(self):
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


# --- every status, from a scripted v1 server --------------------------------


class ScriptedV1Server:
    """Serves a real RSA key at /pki/public_key, no v2 keys, and answers every
    secure completion with the next scripted (status, body)."""

    def __init__(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.script = []
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/pki/public_key":
                    self._send(200, outer.pem, "application/x-pem-file")
                else:
                    self._send(404, b'{"detail":"not found"}')

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.posts += 1
                status, body = outer.script.pop(0) if outer.script else (500, {"detail": "no script"})
                if status == "sleep":
                    time.sleep(body)
                    status, body = 500, {"detail": "slept"}
                self._send(status, json.dumps(body).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def scripted(nomyo_rs):
    s = ScriptedV1Server()
    yield s
    s.close()


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, "InvalidRequestError"),
        (401, "AuthenticationError"),
        (403, "ForbiddenError"),
        (404, "APIError"),
        (409, "APIError"),
        (413, "APIError"),
        (429, "RateLimitError"),
        (500, "ServerError"),
        (502, "APIError"),
        (503, "ServiceUnavailableError"),
        (504, "APIError"),
    ],
)
def test_status_maps_to_nomyos_exception(nomyo_rs, scripted, status, cls):
    scripted.script = [(status, {"detail": f"scripted {status}"})]
    c = chat(nomyo_rs, scripted.url, protocol="v1", max_retries=0, pins=None)
    with pytest.raises(nomyo_rs.APIError) as e:
        run(hello(c))
    assert type(e.value).__name__ == cls
    assert e.value.status_code == status
    assert f"scripted {status}" in str(e.value)
    assert e.value.error_details == {"detail": f"scripted {status}"}


def test_retries_then_succeeds_with_max_retries(nomyo_rs, scripted):
    scripted.script = [(503, {"detail": "busy"})] * 3
    scripted.posts = 0
    c = chat(nomyo_rs, scripted.url, protocol="v1", max_retries=2)
    with pytest.raises(nomyo_rs.ServiceUnavailableError):
        run(hello(c))
    assert scripted.posts == 3


def test_cancelling_a_request_aborts_it(nomyo_rs, scripted):
    """asyncio.wait_for's timeout cancels the awaited future: the Rust task
    is aborted and the loop is not held up by the slow answer."""
    scripted.script = [("sleep", 3.0)]
    scripted.posts = 0
    c = chat(nomyo_rs, scripted.url, protocol="v1", max_retries=0)

    async def go():
        await c.client._native(c.api_key).server_public_key()  # key fetched
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(hello(c), 0.3)
        return time.monotonic() - t0

    t0 = time.monotonic()
    assert run(go()) < 2
    assert time.monotonic() - t0 < 2.5
    assert scripted.posts == 1  # sent, then given up


def test_a_garbled_answer_is_a_security_error(nomyo_rs, scripted):
    package = {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": {"ciphertext": "AAAA", "nonce": "A" * 16, "tag": "A" * 24},
        "encrypted_aes_key": "A" * 684 + "==",
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }
    scripted.script = [(200, package)]
    with pytest.raises(nomyo_rs.SecurityError):
        run(hello(chat(nomyo_rs, scripted.url, protocol="v1", max_retries=0)))


def test_auto_refuses_the_high_tier_over_v1_and_v2_needs_v2_keys(nomyo_rs, scripted):
    with pytest.raises(nomyo_rs.SecurityError, match="v1"):
        run(hello(chat(nomyo_rs, scripted.url), security_tier="high"))
    # protocol v2 against a server without v2 keys: refused, nothing sent.
    scripted.posts = 0
    with pytest.raises(nomyo_rs.SecurityError, match="protocol v2"):
        run(hello(chat(nomyo_rs, scripted.url, protocol="v2", max_retries=0)))
    assert scripted.posts == 0


# --- streaming --------------------------------------------------------------


def test_streaming(nomyo_rs, server, streaming_upstream):
    c = chat(nomyo_rs, server.url)
    prompt = "one two three four"

    async def go():
        stream = await hello(c, prompt, stream=True)
        return [chunk async for chunk in stream]

    chunks = run(go())
    assert len(chunks) >= 5
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == f"echo: {prompt}"
    assert streaming_upstream.requests[-1]["body"]["stream"] is True


def test_leaving_a_stream_early_cancels_it(nomyo_rs, server, streaming_upstream):
    streaming_upstream.chunk_delay = 0.3
    c = chat(nomyo_rs, server.url)
    words = " ".join(f"w{i}" for i in range(30))  # about 9 s when read to the end

    async def go():
        t0 = time.monotonic()
        stream = await hello(c, words, stream=True)
        async for chunk in stream:
            assert chunk["object"] == "chat.completion.chunk"
            break
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        first = time.monotonic() - t0
        # The client is still usable, and the left stream held nothing up.
        r = await hello(c, "after")
        return first, r, time.monotonic() - t0

    first, r, total = run(go())
    assert r["choices"][0]["message"]["content"] == "echo: after"
    assert total < 5, f"leaving the stream took {total:.1f} s"

    async def dropped():
        stream = await hello(c, words, stream=True)
        await stream.__anext__()
        del stream  # dropped without aclose: the connection closes too
        return await hello(c, "again")

    t0 = time.monotonic()
    assert run(dropped())["choices"][0]["message"]["content"] == "echo: again"
    assert time.monotonic() - t0 < 5


def test_streaming_needs_v2(nomyo_rs, server):
    with pytest.raises(ValueError, match="v2"):
        run(hello(chat(nomyo_rs, server.url, protocol="v1"), stream=True))


# --- concurrency ------------------------------------------------------------


def test_32_concurrent_requests_in_one_event_loop(nomyo_rs, server, streaming_upstream):
    for protocol in ("v1", "v2"):
        c = chat(nomyo_rs, server.url, protocol=protocol)

        async def go():
            return await asyncio.gather(*(c.acreate(model="small-model", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(32)))

        answers = run(go())
        assert [a["choices"][0]["message"]["content"] for a in answers] == [f"echo: q{i}" for i in range(32)]
        assert len({a["_metadata"]["payload_id"] for a in answers}) == 32


def test_the_event_loop_runs_while_requests_are_sealed_and_opened(nomyo_rs, server):
    """The GIL is released: a Python thread and the event loop both make
    progress during 16 concurrent requests."""
    c = chat(nomyo_rs, server.url, protocol="v1")
    run(hello(c))  # keys generated, server key fetched
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    async def go():
        async def heartbeat():
            beats = 0
            while not done.is_set():
                beats += 1
                await asyncio.sleep(0.005)
            return beats

        done = asyncio.Event()
        hb = asyncio.create_task(heartbeat())
        await asyncio.gather(*(hello(c, f"x{i}") for i in range(16)))
        done.set()
        return await hb

    t = threading.Thread(target=spin)
    t.start()
    try:
        beats = run(go())
    finally:
        stop.set()
        t.join()
    assert beats >= 1 and len(ticks) >= 5


# --- key files, both ways ---------------------------------------------------


@pytest.mark.parametrize("password", [None, "pass-" + uuid.uuid4().hex])
def test_keys_written_by_nomyo_load_in_nomyo_rs(nomyo_rs, server, tmp_path, password):
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.generate_keys(save_to_file=True, key_dir=str(tmp_path), password=password)
    ours = nomyo_rs.SecureCompletionClient(router_url=server.url, allow_http=True)
    ours.load_keys(str(tmp_path / "private_key.pem"), str(tmp_path / "public_key.pem"), password)
    assert ours.public_key_pem.strip() == ref.public_key_pem.strip()
    # The loaded key opens a real answer.
    r = run(ours.send_secure_request({"model": "small-model", "messages": [{"role": "user", "content": "k"}]}, "id", API_KEY))
    assert r["choices"][0]["message"]["content"] == "echo: k"
    if password:
        with pytest.raises(ValueError, match="Failed to load private key"):
            ours.load_keys(str(tmp_path / "private_key.pem"), password="wrong")
        with pytest.raises(ValueError, match="Failed to load private key"):
            ours.load_keys(str(tmp_path / "private_key.pem"))
    else:
        # SecureChatCompletion(key_dir=...) uses the same directory.
        c = chat(nomyo_rs, server.url, key_dir=str(tmp_path), protocol="v1")
        assert run(hello(c))["_metadata"]["is_encrypted"] is True
        assert (tmp_path / "private_key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("password", [None, "pass-" + uuid.uuid4().hex])
def test_keys_written_by_nomyo_rs_load_in_nomyo(nomyo_rs, server, tmp_path, password):
    ours = nomyo_rs.SecureCompletionClient(router_url=server.url, allow_http=True)
    ours.generate_keys(save_to_file=True, key_dir=str(tmp_path), password=password)
    assert (tmp_path / "private_key.pem").stat().st_mode & 0o777 == 0o600
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.load_keys(str(tmp_path / "private_key.pem"), str(tmp_path / "public_key.pem"), password)
    assert ref.private_key.key_size == 4096
    assert ref.public_key_pem.strip() == ours.public_key_pem.strip()
    if password:
        with pytest.raises(ValueError):
            ref.load_keys(str(tmp_path / "private_key.pem"), password="wrong")
    else:
        # nomyo's SecureChatCompletion with that key directory gets answers.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = nomyo.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=API_KEY, key_dir=str(tmp_path))
        assert run(hello(c))["choices"][0]["message"]["content"] == "echo: hello"
    # Existing keys are never overwritten.
    with pytest.raises(FileExistsError):
        ours.generate_keys(save_to_file=True, key_dir=str(tmp_path))


def test_key_dir_with_password(nomyo_rs, server, tmp_path):
    d = tmp_path / "keys"
    c = chat(nomyo_rs, server.url, key_dir=str(d), key_password="pw-1", protocol="v1")
    assert run(hello(c))["_metadata"]["is_encrypted"] is True
    assert b"ENCRYPTED" in (d / "private_key.pem").read_bytes()
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.load_keys(str(d / "private_key.pem"), password="pw-1")
    again = chat(nomyo_rs, server.url, key_dir=str(d), key_password="pw-1", protocol="v1")
    assert again.client.public_key_pem == c.client.public_key_pem
    with pytest.raises(ValueError):
        chat(nomyo_rs, server.url, key_dir=str(d), key_password="wrong")

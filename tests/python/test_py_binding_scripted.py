"""The Python package nomyo_rs against a scripted fake v1 server: every error
status mapped to `nomyo`'s exception class, retries (max_retries),
cancellation (asyncio.wait_for), a garbled answer, and the refusals of
protocol auto (high tier over v1) and v2 (a server without v2 keys).

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import py_binding_fixtures
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from py_binding_fixtures import chat, hello, run

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

# The shared fixtures (py_binding_fixtures.py), found by pytest under these names.
isolated_config = py_binding_fixtures.isolated_config


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

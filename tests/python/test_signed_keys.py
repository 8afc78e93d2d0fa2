"""Signed v2 key lists (`Nomyo-Keys-Signature`) against Python `cryptography`,
an independent RSA-PSS implementation, in both directions:

- `nomyo serve` signs its `/.well-known/hpke-keys` body with its v1 RSA key
  (RSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt, over
  b"nomyo v2 hpke-keys\\0" + body); Python verifies it, and refuses altered
  bodies and a signature over the bare body; after SIGHUP (RSA and HPKE
  rotation) the new list is signed by the new key;
- a Python server signs a key list with its own key, and the Rust client
  (`nomyo fingerprint --server`) accepts it, and refuses (exit 4) a list
  whose signature covers other bytes or names another key.

Everything on 127.0.0.1, OS ports.
"""

import base64
import hashlib
import http.server
import signal
import threading
import time
import urllib.request

import pytest
from conftest import fingerprint, public_pem
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from server_process import NomyoServer
from test_serve import config_toml

CONTEXT = b"nomyo v2 hpke-keys\x00"
HEADER = "Nomyo-Keys-Signature"
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read(), r.headers


def fetch(base):
    pem, _ = get(base + "/pki/public_key")
    body, headers = get(base + "/.well-known/hpke-keys")
    assert headers["Content-Type"] == "application/ohttp-keys"
    return serialization.load_pem_public_key(pem), body, headers.get(HEADER)


def parse(header):
    alg, key, sig = header.split(";")
    assert alg == "rsa-pss-sha256"
    assert key.startswith("key=sha256:") and len(key) == len("key=sha256:") + 64
    assert sig.startswith("sig=")
    return key[len("key="):], base64.b64decode(sig[len("sig="):], validate=True)


def verify(public_key, body, sig):
    public_key.verify(sig, CONTEXT + body, PSS, hashes.SHA256())


def sign(private_key, body):
    sig = private_key.sign(CONTEXT + body, PSS, hashes.SHA256())
    return f"rsa-pss-sha256;key={fingerprint(private_key.public_key())};sig={base64.b64encode(sig).decode()}"


def serve_args(tmp_path, upstream):
    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    return ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048"]


def test_server_signature_verifies_in_python_and_follows_sighup(tmp_path, nomyo_bin, upstream):
    with NomyoServer(nomyo_bin, serve_args(tmp_path, upstream)) as s:
        key, body, header = fetch(s.url)
        assert header, "the key list is signed"
        fp, sig = parse(header)
        assert fp == fingerprint(key), "signed by the published v1 key"
        assert len(sig) == 256
        verify(key, body, sig)
        # Altered lists, and the bare body (no context), do not verify.
        for other in (body[:-1] + bytes([body[-1] ^ 1]), body + b"\x00", body[:-1]):
            with pytest.raises(InvalidSignature):
                verify(key, other, sig)
        with pytest.raises(InvalidSignature):
            key.verify(sig, body, PSS, hashes.SHA256())
        # The same signature on every fetch (made once per key set).
        assert fetch(s.url)[2] == header

        # SIGHUP rotates the RSA key and the HPKE keys: the new list is
        # signed by the new key only.
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while True:
            key2, body2, header2 = fetch(s.url)
            if body2 != body and fingerprint(key2) != fingerprint(key):
                break
            assert time.monotonic() < deadline, "keys not rotated after SIGHUP"
            time.sleep(0.05)
        # Both rotations done: the list is re-signed by the new key.
        deadline = time.monotonic() + 30
        while parse(header2)[0] != fingerprint(key2):
            assert time.monotonic() < deadline, "list not re-signed by the new key"
            time.sleep(0.05)
            key2, body2, header2 = fetch(s.url)
        fp2, sig2 = parse(header2)
        verify(key2, body2, sig2)
        with pytest.raises(InvalidSignature):
            verify(key, body2, sig2)


class _KeysServer:
    """Serves a v1 key and a key list with whatever signature header it is given."""

    def __init__(self, pem, body):
        self.pem, self.body, self.header = pem, body, None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/pki/public_key":
                    data, ctype = outer.pem, "application/x-pem-file"
                elif self.path == "/.well-known/hpke-keys":
                    data, ctype = outer.body, "application/ohttp-keys"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if ctype == "application/ohttp-keys" and outer.header:
                    self.send_header(HEADER, outer.header)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_rust_client_verifies_a_python_signature(tmp_path, nomyo, nomyo_bin, upstream):
    # A genuine key list (valid configs) taken from a real server.
    with NomyoServer(nomyo_bin, serve_args(tmp_path, upstream)) as s:
        _, body, _ = fetch(s.url)
    py_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    srv = _KeysServer(public_pem(py_key), body)
    try:
        srv.header = sign(py_key, body)
        r = nomyo("fingerprint", "--server", srv.url, "--allow-http")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"v1 {fingerprint(py_key.public_key())}"
        assert [l.split()[1] for l in lines[1:]] == ["x25519", "x-wing"], r.stdout
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        assert digest not in r.stdout  # per-config fingerprints, not the list's

        # A signature over other bytes, one by another key naming itself,
        # and one by another key claiming to be the server's: exit 4.
        claimed = sign(intruder, body).replace(
            fingerprint(intruder.public_key()), fingerprint(py_key.public_key())
        )
        for header in (sign(py_key, body + b"x"), sign(intruder, body), claimed):
            srv.header = header
            r = nomyo("fingerprint", "--server", srv.url, "--allow-http")
            assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
            assert "v2 keys" in r.stderr and "sign" in r.stderr, r.stderr
            assert r.stdout == ""
    finally:
        srv.close()

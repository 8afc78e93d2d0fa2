"""Signed v2 key lists (`Nomyo-Keys-Signature`) against Python `cryptography`,
an independent RSA-PSS implementation, in both directions:

- `nomyo serve` signs its `/.well-known/hpke-keys` body with its v1 RSA key
  (RSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt, over
  b"nomyo v2 hpke-keys validity\\0" + nbf (8 bytes, big-endian) + exp
  (8 bytes) + body); Python verifies it, and refuses altered bodies, an
  altered window and a signature over the bare body; after SIGHUP (RSA and
  HPKE rotation) the new list is signed by the new key;
- a Python server signs a key list with its own key, and the Rust client
  (`nomyo fingerprint --server`) accepts it, and refuses (exit 4) a list
  whose signature covers other bytes, names another key, has no validity
  window, or was valid only in the past (a list captured before a rotation
  and replayed) or only in the future.

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
from v1_package import fingerprint, public_pem
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from server_process import NomyoServer
from test_serve import config_toml

CONTEXT = b"nomyo v2 hpke-keys validity\x00"
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
    """(key fingerprint, (nbf, exp), signature bytes)."""
    alg, key, nbf, exp, sig = header.split(";")
    assert alg == "rsa-pss-sha256"
    assert key.startswith("key=sha256:") and len(key) == len("key=sha256:") + 64
    assert nbf.startswith("nbf=") and exp.startswith("exp=")
    assert sig.startswith("sig=")
    window = (int(nbf[len("nbf="):]), int(exp[len("exp="):]))
    return key[len("key="):], window, base64.b64decode(sig[len("sig="):], validate=True)


def message(window, body):
    nbf, exp = window
    return CONTEXT + nbf.to_bytes(8, "big") + exp.to_bytes(8, "big") + body


def verify(public_key, body, sig, window):
    public_key.verify(sig, message(window, body), PSS, hashes.SHA256())


def sign(private_key, body, window=None, with_window=True):
    if window is None:
        now = int(time.time())
        window = (now - 60, now + 3600)
    fp = fingerprint(private_key.public_key())
    if not with_window:
        sig = private_key.sign(b"nomyo v2 hpke-keys\x00" + body, PSS, hashes.SHA256())
        return f"rsa-pss-sha256;key={fp};sig={base64.b64encode(sig).decode()}"
    sig = private_key.sign(message(window, body), PSS, hashes.SHA256())
    nbf, exp = window
    return f"rsa-pss-sha256;key={fp};nbf={nbf};exp={exp};sig={base64.b64encode(sig).decode()}"


def serve_args(tmp_path, upstream):
    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    return ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048"]


def test_server_signature_verifies_in_python_and_follows_sighup(tmp_path, nomyo_bin, upstream):
    with NomyoServer(nomyo_bin, serve_args(tmp_path, upstream)) as s:
        key, body, header = fetch(s.url)
        assert header, "the key list is signed"
        fp, window, sig = parse(header)
        assert fp == fingerprint(key), "signed by the published v1 key"
        assert len(sig) == 256
        verify(key, body, sig, window)
        # Valid from about now for a day (no rotation schedule) plus the grace period.
        nbf, exp = window
        assert abs(nbf - time.time()) < 120
        assert 24 * 3600 < exp - nbf <= 31 * 24 * 3600
        # Altered lists, an altered window, and the bare body (no context), do not verify.
        for other in (body[:-1] + bytes([body[-1] ^ 1]), body + b"\x00", body[:-1]):
            with pytest.raises(InvalidSignature):
                verify(key, other, sig, window)
        with pytest.raises(InvalidSignature):
            verify(key, body, sig, (nbf, exp + 1))
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
        fp2, window2, sig2 = parse(header2)
        verify(key2, body2, sig2, window2)
        with pytest.raises(InvalidSignature):
            verify(key, body2, sig2, window2)


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

        # A list captured before a rotation and replayed after its window,
        # one valid only in the future, and the old syntax without a
        # window: genuine signatures by the right key, all refused.
        now = int(time.time())
        cases = (
            (sign(py_key, body, (now - 3 * 86400, now - 2 * 86400)), "expired"),
            (sign(py_key, body, (now + 86400, now + 2 * 86400)), "valid only from"),
            (sign(py_key, body, with_window=False), "validity window"),
        )
        for header, why in cases:
            srv.header = header
            r = nomyo("fingerprint", "--server", srv.url, "--allow-http")
            assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
            assert why in r.stderr, r.stderr
            assert r.stdout == ""
    finally:
        srv.close()

#!/usr/bin/env python3
"""An independent protocol-v1 server, written from docs/PROTOCOL.md with Python's
`cryptography` (none of the Rust code), for interoperability tests of the Rust
client and `nomyo chat`.

    python3 v1_server.py [--bits 2048]

Prints `listening on http://127.0.0.1:PORT` once ready. Answers every
completion with "python saw: <last user message>" and a `_metadata` object as
docs/PROTOCOL.md describes it. It is a test double: no policy, no limits.
"""

import base64
import json
import os
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

bits = int(sys.argv[sys.argv.index("--bits") + 1]) if "--bits" in sys.argv else 4096
SERVER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=bits)
SERVER_PEM = SERVER_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def seal(plaintext: bytes, public_key) -> dict:
    key = os.urandom(32)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": {
            "ciphertext": base64.b64encode(sealed[:-16]).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "tag": base64.b64encode(sealed[-16:]).decode(),
        },
        "encrypted_aes_key": base64.b64encode(public_key.encrypt(key, OAEP)).decode(),
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }


def open_package(package: dict) -> bytes:
    if package.get("version") != "1.0" or package.get("algorithm") != "hybrid-aes256-rsa4096":
        raise ValueError("unsupported version or algorithm")
    p = package["encrypted_payload"]
    key = SERVER_KEY.decrypt(base64.b64decode(package["encrypted_aes_key"]), OAEP)
    ct = base64.b64decode(p["ciphertext"]) + base64.b64decode(p["tag"])
    return AESGCM(key).decrypt(base64.b64decode(p["nonce"]), ct, None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, status, body: bytes, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, detail):
        self._send(status, json.dumps({"detail": detail}).encode())

    def do_GET(self):
        if self.path == "/pki/public_key":
            self._send(200, SERVER_PEM, "text/plain")
        else:
            self._error(404, "not found")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/chat/secure_completion":
            return self._error(404, "not found")
        if self.headers.get("Content-Type") != "application/octet-stream":
            return self._error(400, "wrong content type")
        payload_id = self.headers.get("X-Payload-ID")
        if not payload_id:
            return self._error(400, "missing X-Payload-ID")
        tier = self.headers.get("X-Security-Tier", "standard")
        if tier not in ("standard", "high", "maximum"):
            return self._error(400, "invalid tier")
        try:
            client_key = serialization.load_pem_public_key(
                urllib.parse.unquote(self.headers["X-Public-Key"]).encode()
            )
        except Exception:
            return self._error(400, "invalid X-Public-Key")
        try:
            request = json.loads(open_package(json.loads(body)))
        except Exception:
            return self._error(400, "decryption failed")
        if request.get("stream"):
            return self._error(400, "streaming is not supported")
        last = request["messages"][-1]["content"]
        now = int(time.time())
        completion = {
            "id": "chatcmpl-python",
            "object": "chat.completion",
            "created": now,
            "model": request["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"python saw: {last}"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            "request_keys": sorted(request.keys()),
            "_metadata": {
                "payload_id": payload_id,
                "processed_at": now,
                "is_encrypted": True,
                "response_status": "success",
                "security_tier": tier,
                "memory_protection": {
                    "platform": sys.platform,
                    "memory_locking": False,
                    "secure_zeroing": False,
                    "core_dump_prevention": False,
                },
                "cuda_device": {"available": False, "device_hash": ""},
            },
        }
        package = seal(json.dumps(completion).encode(), client_key)
        package["payload_id"] = payload_id
        package["processed_at"] = now
        self._send(200, json.dumps(package).encode())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()

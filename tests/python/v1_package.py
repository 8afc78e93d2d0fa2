"""The v1 package (docs/PROTOCOL.md) written with Python `cryptography` alone,
independently of the Rust code: sealing, strict opening and the key
fingerprint. Shared by the interoperability tests (through conftest) and
bench_crypto.py.
"""

import base64
import hashlib
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def fingerprint(public_key) -> str:
    """The project's fingerprint, computed independently: sha256 over DER SPKI."""
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

#!/usr/bin/env python3
"""Known-answer data for nomyo-core, made by an independent implementation:
Python `cryptography` (OpenSSL), exactly as the reference client `nomyo` 0.2.9
uses it.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install 'cryptography==48.0.0'
    /tmp/v/bin/python crates/nomyo-core/tests/vectors/gen_vectors.py

writes, next to this script:

- keys.json: private keys in every encoding the Rust loader must accept
  (PKCS#8, PKCS#8 encrypted by `BestAvailableEncryption` -- which is what
  the reference client writes when given a password --, PKCS#1
  `RSA PRIVATE KEY`; `cryptography` has no PKCS#8 encryption builder, so
  keys with nomyo's own 600,000-iteration parameters are checked the other way
  round, Rust writes and Python loads, in tests/python), each with the
  fingerprint Python computes (sha256 over the DER SubjectPublicKeyInfo) and
  the `X-Public-Key` value `urllib.parse.quote(pem)` gives; and keys the loader
  must refuse (1024-bit, legacy OpenSSL-encrypted PEM), with the reason.
- pem/: the same keys as PEM files, with fingerprints.txt and password.txt,
  for the CLI's golden tests.
- v1_packages.json: v1 packages sealed by Python the way
  `SecureCompletionClient._do_encrypt` seals them (same JSON shape, same
  `json.dumps` separators), with the AES key, nonce and plaintext recorded so
  that the Rust side checks every decoded field, not just "it opened".

The output is random (fresh keys every run); the committed files are one run.
"""

import base64
import hashlib
import json
import os
import sys
import time
import urllib.parse

import cryptography
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "correct horse battery staple \u00e9\u00e8"  # non-ASCII on purpose: UTF-8 bytes


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def spki_pem(key) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def fingerprint(key) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def seal(plaintext: bytes, public_key, aes_key: bytes, nonce: bytes, extra=None) -> str:
    """The reference client's _do_encrypt, with the AES key and nonce given."""
    ct_and_tag = AESGCM(aes_key).encrypt(nonce, plaintext, None)
    ciphertext, tag = ct_and_tag[:-16], ct_and_tag[-16:]
    encrypted_aes_key = public_key.encrypt(
        aes_key,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    package = {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": {"ciphertext": b64(ciphertext), "nonce": b64(nonce), "tag": b64(tag)},
        "encrypted_aes_key": b64(encrypted_aes_key),
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }
    if extra:
        package.update(extra)
    return json.dumps(package)


def main() -> None:
    print(f"cryptography {cryptography.__version__}, Python {sys.version.split()[0]}", file=sys.stderr)
    k2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    k3072 = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    k4096 = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    k1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pw = PASSWORD.encode("utf-8")

    def priv(key, fmt, enc) -> str:
        return key.private_bytes(serialization.Encoding.PEM, fmt, enc).decode("ascii")

    pkcs8, pkcs1 = serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL

    keys = []

    def add(name, key, pem, password, note):
        keys.append(
            {
                "name": name,
                "note": note,
                "bits": key.key_size,
                "private_pem": pem,
                "password": password,
                "public_pem": spki_pem(key),
                "fingerprint": fingerprint(key),
                "x_public_key": urllib.parse.quote(spki_pem(key)),
            }
        )

    add("rsa2048-pkcs8", k2048, priv(k2048, pkcs8, serialization.NoEncryption()), None,
        "PKCS#8 PRIVATE KEY, unencrypted (what the reference client writes without a password)")
    add("rsa4096-pkcs8-best-available", k4096,
        priv(k4096, pkcs8, serialization.BestAvailableEncryption(pw)), PASSWORD,
        "ENCRYPTED PRIVATE KEY from BestAvailableEncryption (the reference client with a password): "
        "PBES2, PBKDF2-HMAC-SHA256, 2048 iterations, AES-256-CBC")
    add("rsa3072-pkcs1", k3072, priv(k3072, pkcs1, serialization.NoEncryption()), None,
        "PKCS#1 RSA PRIVATE KEY, unencrypted")

    refused = [
        {"name": "rsa1024-pkcs8", "kind": "private", "pem": priv(k1024, pkcs8, serialization.NoEncryption()),
         "password": None, "error": "KeyTooSmall", "bits": 1024},
        {"name": "rsa1024-pkcs1", "kind": "private", "pem": priv(k1024, pkcs1, serialization.NoEncryption()),
         "password": None, "error": "KeyTooSmall", "bits": 1024},
        {"name": "rsa1024-pkcs8-best-available", "kind": "private",
         "pem": priv(k1024, pkcs8, serialization.BestAvailableEncryption(pw)),
         "password": PASSWORD, "error": "KeyTooSmall", "bits": 1024},
        {"name": "rsa1024-spki", "kind": "public", "pem": spki_pem(k1024),
         "password": None, "error": "KeyTooSmall", "bits": 1024},
        {"name": "rsa2048-pkcs1-legacy-openssl-encryption", "kind": "private",
         "pem": priv(k2048, pkcs1, serialization.BestAvailableEncryption(pw)),
         "password": PASSWORD, "error": "Key", "bits": 2048},
    ]

    with open(os.path.join(HERE, "keys.json"), "w") as f:
        json.dump(
            {
                "generator": f"gen_vectors.py, Python cryptography {cryptography.__version__}",
                "keys": keys,
                "refused": refused,
            },
            f,
            indent=1,
        )
        f.write("\n")

    # The same keys as plain files, for the CLI's golden tests
    # (crates/nomyo-cli/tests), which read files as a user would.
    pem_dir = os.path.join(HERE, "pem")
    os.makedirs(pem_dir, exist_ok=True)
    for old in os.listdir(pem_dir):
        os.remove(os.path.join(pem_dir, old))
    with open(os.path.join(pem_dir, "password.txt"), "w") as f:
        f.write(PASSWORD + "\n")
    with open(os.path.join(pem_dir, "fingerprints.txt"), "w") as f:
        for k in keys:
            with open(os.path.join(pem_dir, k["name"] + ".pem"), "w") as pf:
                pf.write(k["private_pem"])
            f.write(f"{k['name']} {k['fingerprint']}\n")
    for r in refused:
        with open(os.path.join(pem_dir, r["name"] + ".pem"), "w") as pf:
            pf.write(r["pem"])

    # --- packages -----------------------------------------------------------
    chat = json.dumps(
        {
            "model": "Qwen/Qwen3-0.6B",
            "messages": [{"role": "user", "content": "What is the capital of France? \u00e9\u4e2d\U0001f600"}],
            "temperature": 0.7,
        }
    ).encode("utf-8")
    completion = json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1764300000,
            "model": "Qwen/Qwen3-0.6B",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "_metadata": {"payload_id": "5b0c4d9e-1f0a-4a55-9d8e-0123456789ab", "security_tier": "standard"},
        },
        ensure_ascii=False,
    ).encode("utf-8")
    big = os.urandom(65536)

    cases = [
        ("request-chat-to-2048", "rsa2048-pkcs8", k2048, chat, None),
        ("request-chat-to-4096", "rsa4096-pkcs8-best-available", k4096, chat, None),
        ("request-chat-to-3072-pkcs1", "rsa3072-pkcs1", k3072, chat, None),
        ("empty-plaintext", "rsa2048-pkcs8", k2048, b"", None),
        ("binary-64KiB", "rsa2048-pkcs8", k2048, big, None),
        ("response-int-processed-at", "rsa4096-pkcs8-best-available", k4096, completion,
         {"payload_id": "5b0c4d9e-1f0a-4a55-9d8e-0123456789ab", "processed_at": 1764300000}),
        ("response-float-processed-at", "rsa2048-pkcs8", k2048, completion,
         {"payload_id": "5b0c4d9e-1f0a-4a55-9d8e-0123456789ab", "processed_at": 1764300000.25}),
    ]
    packages = []
    for name, key_name, key, plaintext, extra in cases:
        aes_key, nonce = os.urandom(32), os.urandom(12)
        wire = seal(plaintext, key.public_key(), aes_key, nonce, extra)
        p = json.loads(wire)["encrypted_payload"]
        packages.append(
            {
                "name": name,
                "key": key_name,
                "plaintext_b64": b64(plaintext),
                "aes_key_hex": aes_key.hex(),
                "nonce_hex": nonce.hex(),
                "tag_hex": base64.b64decode(p["tag"]).hex(),
                "payload_id": (extra or {}).get("payload_id"),
                "processed_at": int((extra or {}).get("processed_at", 0)) if extra else None,
                "package": wire,
            }
        )
    # Sealed to the 4096-bit key, offered to the 2048-bit one: must be the
    # opaque decryption failure... except that the wrapped key's length gives it
    # away as "wrong size" (public information): Rust says Malformed. Same size,
    # different key: DecryptionFailed.
    other2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = seal(chat, other2048.public_key(), os.urandom(32), os.urandom(12))
    packages_wrong_key = [{"name": "sealed-to-another-2048-key", "key": "rsa2048-pkcs8", "package": wrong}]

    with open(os.path.join(HERE, "v1_packages.json"), "w") as f:
        json.dump(
            {
                "generator": f"gen_vectors.py, Python cryptography {cryptography.__version__}",
                "generated_at": int(time.time()),
                "packages": packages,
                "wrong_key": packages_wrong_key,
            },
            f,
            indent=1,
        )
        f.write("\n")
    print("wrote keys.json and v1_packages.json", file=sys.stderr)


if __name__ == "__main__":
    main()

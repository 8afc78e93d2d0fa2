#!/usr/bin/env python3
"""Known-answer data for protocol v2's HPKE, made by an independent
implementation: Python `cryptography` 48 (OpenSSL/aws-lc underneath).

For each suite (DHKEM(X25519) and X-Wing = MLKEM768_X25519, both with
HKDF-SHA256 and AES-256-GCM) it writes a private key in the encoding the Rust
`hpke` crate uses (X25519: the 32-byte scalar; X-Wing: the 32-byte seed that
SHAKE256 expands into the ML-KEM-768 seed d||z and the X25519 scalar, per
draft-connolly-cfrg-xwing-kem), the public key Python derives from it, and a
single-shot HPKE seal with info = "ehbp request" (which is exactly the first
chunk of an EHBP request body). Rust must derive the same public key and open
the ciphertext.

Run: python3 gen_hpke_vectors.py > hpke_python.json
"""
import hashlib
import json
import os

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

INFO = b"ehbp request"


def xwing_key(seed: bytes):
    expanded = hashlib.shake_256(seed).digest(96)
    mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    xk = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
    public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    return hpke.MLKEM768X25519PrivateKey(mk, xk), public


def main():
    cases = []
    plaintexts = [b"", b"hello from python", json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9 \u2603"}]}).encode(),
        os.urandom(3000)]
    for kem_name in ("x25519", "x-wing"):
        for pt in plaintexts:
            if kem_name == "x-wing":
                secret = os.urandom(32)
                sk, public = xwing_key(secret)
                suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
                pk = sk.public_key()
            else:
                xk = x25519.X25519PrivateKey.generate()
                secret = xk.private_bytes_raw()
                public = xk.public_key().public_bytes_raw()
                sk, pk = xk, xk.public_key()
                suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
            sealed = suite.encrypt(pt, pk, info=INFO)
            assert suite.decrypt(sealed, sk, info=INFO) == pt
            cases.append({
                "kem": kem_name,
                "secretKey": secret.hex(),
                "publicKey": public.hex(),
                "info": INFO.hex(),
                "plaintext": pt.hex(),
                "sealed": sealed.hex(),
            })
    import cryptography
    print(json.dumps({"generator": f"python cryptography {cryptography.__version__}", "cases": cases}, indent=1))


if __name__ == "__main__":
    main()

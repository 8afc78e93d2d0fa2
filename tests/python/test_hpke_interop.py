"""Protocol v2's HPKE in the Rust -> Python direction: Python `cryptography`
48 (an independent HPKE, OpenSSL/aws-lc underneath) makes the key pair, the
core's v2 request sealer (`RequestSealer`, through the `hpketool` example)
seals a request body to it, and Python opens it.

Both suites: DHKEM(X25519, HKDF-SHA256) and X-Wing (`KEM.MLKEM768_X25519`),
with HKDF-SHA256 and AES-256-GCM, info "ehbp request" and empty AAD (EHBP
§4.1/§4.4.1). Python's HPKE is single-shot (sequence number 0), which is
exactly the first chunk of a request body; a later chunk must NOT open under
that nonce. The other direction (Python seals, Rust opens) is
crates/nomyo-core/tests/core/hpke_python_vectors.rs.
"""

import json
import os
import struct
import subprocess

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

INFO = b"ehbp request"
KEM_IDS = {"x25519": 0x0020, "x-wing": 0x647A}
ENC_LEN = {"x25519": 32, "x-wing": 1120}
PUBLIC_KEY_LEN = {"x25519": 32, "x-wing": 1216}


def python_key_pair(kem):
    """(private key, raw public key bytes, Suite), all made by `cryptography`."""
    if kem == "x-wing":
        mk, xk = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        # X-Wing's public key: the ML-KEM-768 key, then the X25519 key.
        public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        return hpke.MLKEM768X25519PrivateKey(mk, xk), public, hpke.Suite(
            hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
        )
    xk = x25519.X25519PrivateKey.generate()
    return xk, xk.public_key().public_bytes_raw(), hpke.Suite(
        hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    )


def key_config(key_id, kem, public):
    """RFC 9458 §3 key_config, written here from the spec: key_id, kem_id,
    public key, then the (HKDF-SHA256, AES-256-GCM) suite."""
    return struct.pack(">BH", key_id, KEM_IDS[kem]) + public + struct.pack(">HHH", 4, 0x0001, 0x0002)


def deframe(body):
    """EHBP §4.3: a 4-byte big-endian length, then that many ciphertext bytes."""
    frames, i = [], 0
    while i < len(body):
        assert i + 4 <= len(body), "the body ends inside a length prefix"
        (n,) = struct.unpack(">I", body[i : i + 4])
        assert i + 4 + n <= len(body), "the body ends inside a frame"
        frames.append(body[i + 4 : i + 4 + n])
        i += 4 + n
    return frames


def rust_seal(hpketool_bin, args, plaintext):
    p = subprocess.run([hpketool_bin, "seal", *map(str, args)], input=plaintext, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


PLAINTEXT = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9 \u2603 from rust"}]}, ensure_ascii=False
).encode()


@pytest.mark.parametrize("kem", ["x25519", "x-wing"])
@pytest.mark.parametrize("given_as", ["config", "public-key"])
def test_python_opens_what_rust_sealed(hpketool_bin, kem, given_as):
    sk, public, suite = python_key_pair(kem)
    assert len(public) == PUBLIC_KEY_LEN[kem]
    if given_as == "config":
        args = ["--config", key_config(7, kem, public).hex()]
    else:
        args = ["--kem", kem, "--public-key", public.hex(), "--key-id", 7]
    out = rust_seal(hpketool_bin, args, PLAINTEXT)
    assert (out["kem"], out["kem_id"], out["key_id"]) == (kem, KEM_IDS[kem], 7)
    assert bytes.fromhex(out["info"]) == INFO and out["aad"] == ""
    enc = bytes.fromhex(out["enc"])
    assert len(enc) == ENC_LEN[kem]
    frames = deframe(bytes.fromhex(out["body"]))
    assert len(frames) == out["chunks"] == 1
    assert len(frames[0]) == len(PLAINTEXT) + 16  # AES-256-GCM tag
    assert suite.decrypt(enc + frames[0], sk, info=INFO) == PLAINTEXT


@pytest.mark.parametrize("kem", ["x25519", "x-wing"])
def test_python_refuses_tampered_or_misbound_data(hpketool_bin, kem):
    sk, public, suite = python_key_pair(kem)
    plaintext = os.urandom(100)
    # Two chunks of 50 bytes: the first is the single-shot message (sequence 0).
    out = rust_seal(hpketool_bin, ["--config", key_config(1, kem, public).hex(), "--chunk-size", 50], plaintext)
    enc = bytes.fromhex(out["enc"])
    first, second = deframe(bytes.fromhex(out["body"]))
    assert out["chunks"] == 2
    assert suite.decrypt(enc + first, sk, info=INFO) == plaintext[:50]

    def refused(sealed, info=INFO, key=sk):
        with pytest.raises(InvalidTag):
            suite.decrypt(sealed, key, info=info)

    flipped_ct = bytearray(first)
    flipped_ct[3] ^= 0x01
    refused(enc + bytes(flipped_ct))
    flipped_tag = bytearray(first)
    flipped_tag[-1] ^= 0x80
    refused(enc + bytes(flipped_tag))
    flipped_enc = bytearray(enc)
    flipped_enc[0] ^= 0x01
    refused(bytes(flipped_enc) + first)
    # Bound to the request context's info.
    refused(enc + first, info=b"ehbp response")
    # The second chunk was sealed under sequence number 1, not 0.
    refused(enc + second)
    # Sealed to this key only.
    refused(enc + first, key=python_key_pair(kem)[0])


def test_a_bad_public_key_is_refused(hpketool_bin):
    p = subprocess.run(
        [hpketool_bin, "seal", "--kem", "x-wing", "--public-key", "00" * 32],
        input=b"x",
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert p.stdout == b""
    # 32 bytes where X-Wing needs 1216.
    assert p.stderr.startswith(b"hpketool: INVALID_KEY_CONFIG"), p.stderr

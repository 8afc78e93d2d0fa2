#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the known-answer vectors in
crates/nomyo-core/tests/vectors (run from anywhere; needs `cryptography` for
one extra key encrypted with the password the private_key_pem target uses)."""

import base64
import json
import os
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "crates", "nomyo-core", "tests", "vectors")


def write(target, name, data: bytes):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


packages = json.load(open(os.path.join(VECTORS, "v1_packages.json")))
for p in packages["packages"]:
    if len(p["package"]) < 4096:
        write("package", p["name"], p["package"].encode())

keys = json.load(open(os.path.join(VECTORS, "keys.json")))
for k in keys["keys"]:
    if k["bits"] <= 3072:
        write("private_key_pem", k["name"], b"\x01" + k["private_pem"].encode())
    write("public_key_header", k["name"], k["x_public_key"].encode())
for r in keys["refused"]:
    write("private_key_pem", r["name"], b"\x01" + r["pem"].encode())
    if r["kind"] == "public":
        write("public_key_header", r["name"], urllib.parse.quote(r["pem"]).encode())


# Raw DER seeds: selector bits 4-5 name the PEM label the target wraps them in
# (0x10 PRIVATE KEY, 0x20 RSA PRIVATE KEY, 0x30 ENCRYPTED PRIVATE KEY); a low
# nibble of 0 gives the password.
LABELS = {"PRIVATE KEY": 0x11, "RSA PRIVATE KEY": 0x21, "ENCRYPTED PRIVATE KEY": 0x30}


def der_seed(name, pem: str):
    lines = pem.strip().splitlines()
    label = lines[0][len("-----BEGIN "):-len("-----")]
    if label in LABELS and not any(":" in l for l in lines):
        write("private_key_pem", name + ".der", bytes([LABELS[label]]) + base64.b64decode("".join(lines[1:-1])))


for k in keys["keys"]:
    if k["bits"] <= 3072:
        der_seed(k["name"], k["private_pem"])
for r in keys["refused"]:
    if r["kind"] == "private":
        der_seed(r["name"], r["pem"])

# Selector byte 0 gives the target's password, "fuzz password".
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = k.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"fuzz password"),
)
write("private_key_pem", "rsa2048-encrypted-fuzz-password", b"\x00" + pem)
der_seed("rsa2048-encrypted-fuzz-password", pem.decode())

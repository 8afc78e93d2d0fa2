"""nomyo-core against independent Python implementations, live:

- Rust seals (v1tool), Python `cryptography` opens, and the reverse;
- the real reference client `nomyo` 0.2.9: its `encrypt_payload` output is
  opened by Rust, and its own `decrypt_response` opens Rust-sealed responses;
- key files written by `nomyo keygen` load in Python (and in the reference
  client) with the same fingerprint, and keys the reference client writes give
  the same fingerprint through `nomyo fingerprint`.
"""

import asyncio
import json
import os
import stat
import urllib.parse
import uuid

import pytest
from v1_package import fingerprint, public_pem, py_open, py_seal
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nomyo import SecurityError
from nomyo.SecureCompletionClient import SecureCompletionClient

PASSWORD = "pässwörd with spaces"


@pytest.fixture(scope="module")
def py_key_4096():
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


@pytest.fixture(scope="module")
def rust_server_keys(tmp_path_factory, nomyo):
    """A key pair written by `nomyo keygen` (RSA-4096, unencrypted)."""
    d = tmp_path_factory.mktemp("server_keys")
    r = nomyo("keygen", "--out", d, "--no-password")
    assert r.returncode == 0, r.stderr
    return d


PLAINTEXTS = {
    "chat": json.dumps({"model": "m", "messages": [{"role": "user", "content": "héllo \u4e2d\U0001f600"}]}).encode(),
    "empty": b"",
    "one-byte": b"x",
    "binary-1MiB": os.urandom(1 << 20),
}


@pytest.mark.parametrize("name", sorted(PLAINTEXTS))
def test_rust_sealed_package_opens_in_python(name, tmp_path, v1tool, py_key_4096):
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(py_key_4096))
    package = v1tool("seal", "--to", pub, stdin=PLAINTEXTS[name]).stdout
    assert py_open(package, py_key_4096) == PLAINTEXTS[name]


def test_rust_response_fields_as_python_expects(tmp_path, v1tool, py_key_4096):
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(py_key_4096))
    pid = str(uuid.uuid4())
    package = v1tool("seal", "--to", pub, "--payload-id", pid, "--processed-at", 1764300000, stdin=b"{}").stdout
    p = json.loads(package)
    assert p["payload_id"] == pid
    assert p["processed_at"] == 1764300000
    assert set(p) == {
        "version", "algorithm", "encrypted_payload", "encrypted_aes_key",
        "key_algorithm", "payload_algorithm", "payload_id", "processed_at",
    }


@pytest.mark.parametrize("name", sorted(PLAINTEXTS))
def test_python_sealed_package_opens_in_rust(name, v1tool, rust_server_keys):
    pub = serialization.load_pem_public_key((rust_server_keys / "public_key.pem").read_bytes())
    package = py_seal(PLAINTEXTS[name], pub)
    opened = v1tool("open", "--key", rust_server_keys / "private_key.pem", stdin=package).stdout
    assert opened == PLAINTEXTS[name]


def test_python_sealed_package_tampered_is_refused_by_rust(v1tool, rust_server_keys):
    pub = serialization.load_pem_public_key((rust_server_keys / "public_key.pem").read_bytes())
    p = json.loads(py_seal(b'{"secret":"canary-91ab"}', pub))
    tag = bytearray(__import__("base64").b64decode(p["encrypted_payload"]["tag"]))
    tag[0] ^= 1
    p["encrypted_payload"]["tag"] = __import__("base64").b64encode(bytes(tag)).decode()
    r = v1tool("open", "--key", rust_server_keys / "private_key.pem", stdin=json.dumps(p).encode(), check=False)
    assert r.returncode == 1
    assert r.stdout == b""
    assert r.stderr.decode().strip() == "v1tool: decryption failed"


# --- the real reference client ----------------------------------------------


def reference_client(server_public_pem: str) -> SecureCompletionClient:
    """The unmodified nomyo 0.2.9 client, with its key fetch answered locally
    (it would GET {router_url}/pki/public_key; there is no server here)."""
    client = SecureCompletionClient(router_url="https://nomyo.invalid")

    async def fetch_server_public_key():
        return server_public_pem

    client.fetch_server_public_key = fetch_server_public_key
    return client


def test_reference_client_encrypt_payload_opens_in_rust(v1tool, rust_server_keys):
    client = reference_client((rust_server_keys / "public_key.pem").read_text())
    payload = {
        "model": "Qwen/Qwen3-0.6B",
        "messages": [{"role": "user", "content": "What is the capital of France? é\u4e2d"}],
        "temperature": 0.7,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    package = asyncio.run(client.encrypt_payload(payload))
    assert isinstance(package, bytes)
    opened = v1tool("open", "--key", rust_server_keys / "private_key.pem", stdin=package).stdout
    assert json.loads(opened) == payload
    # Byte for byte what the reference client serialised (json.dumps, ASCII escapes).
    assert opened == json.dumps(payload).encode()


def test_reference_client_decrypt_response_opens_rust_response(tmp_path, v1tool, rust_server_keys):
    client = reference_client((rust_server_keys / "public_key.pem").read_text())
    client.generate_keys()  # its own RSA-4096 key pair, in memory
    pub = tmp_path / "client_pub.pem"
    pub.write_text(client.public_key_pem)
    pid = str(uuid.uuid4())
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1764300000,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris. ü\u4e2d"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "_metadata": {"payload_id": pid, "security_tier": "high", "response_status": "success"},
    }
    package = v1tool(
        "seal", "--to", pub, "--payload-id", pid, "--processed-at", 1764300123,
        stdin=json.dumps(completion, ensure_ascii=False).encode(),
    ).stdout
    response = asyncio.run(client.decrypt_response(package, pid))
    meta = response.pop("_metadata")
    expected_meta = dict(completion["_metadata"])
    expected_meta.update(
        {"payload_id": pid, "processed_at": 1764300123, "is_encrypted": True, "encryption_algorithm": "hybrid-aes256-rsa4096"}
    )
    assert meta == expected_meta
    del completion["_metadata"]
    assert response == completion


def test_reference_client_refuses_tampered_rust_response(tmp_path, v1tool, rust_server_keys):
    client = reference_client((rust_server_keys / "public_key.pem").read_text())
    client.generate_keys()
    pub = tmp_path / "client_pub.pem"
    pub.write_text(client.public_key_pem)
    package = json.loads(v1tool("seal", "--to", pub, stdin=b'{"ok":true}').stdout)
    good = json.dumps(package).encode()
    assert asyncio.run(client.decrypt_response(good, "x"))["ok"] is True
    ct = package["encrypted_payload"]["ciphertext"]
    package["encrypted_payload"]["ciphertext"] = ("A" if ct[0] != "A" else "B") + ct[1:]
    with pytest.raises(SecurityError):
        asyncio.run(client.decrypt_response(json.dumps(package).encode(), "x"))
    # A Rust response sealed to another key is refused too. (nomyo 0.2.9 lets
    # cryptography's OAEP ValueError("Decryption failed") escape unmasked here,
    # instead of its SecurityError: a quirk of the reference client.)
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=4096)))
    foreign = v1tool("seal", "--to", other, stdin=b'{"ok":true}').stdout
    with pytest.raises((SecurityError, ValueError), match="Decryption failed"):
        asyncio.run(client.decrypt_response(foreign, "x"))


def test_x_public_key_header_matches_urllib_quote(tmp_path, v1tool, py_key_4096, rust_server_keys):
    for pem in [public_pem(py_key_4096).decode(), (rust_server_keys / "public_key.pem").read_text()]:
        # What the reference client sends (send_secure_request).
        python_header = urllib.parse.quote(pem)
        assert v1tool("quote", stdin=pem.encode()).stdout.decode() == python_header
        key = serialization.load_pem_public_key(pem.encode())
        assert v1tool("unquote", stdin=python_header.encode()).stdout.decode().strip() == fingerprint(key)
    # The reference client's own header value for its own key.
    client = SecureCompletionClient(router_url="https://nomyo.invalid")
    client.generate_keys()
    header = urllib.parse.quote(client.public_key_pem)
    fp = fingerprint(client.private_key.public_key())
    assert v1tool("unquote", stdin=header.encode()).stdout.decode().strip() == fp


def test_small_x_public_key_is_refused_clearly(v1tool):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    r = v1tool("unquote", stdin=urllib.parse.quote(public_pem(small).decode()).encode(), check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "1024" in err and "2048" in err, err


# --- key files ------------------------------------------------------------------


def test_nomyo_keygen_password_file_loads_in_python(tmp_path, nomyo, v1tool):
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")
    out = tmp_path / "keys"
    r = nomyo("keygen", "--out", out, "--password-file", pwfile)
    assert r.returncode == 0, r.stderr
    priv_path, pub_path = out / "private_key.pem", out / "public_key.pem"
    assert stat.S_IMODE(priv_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    pem = priv_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")

    key = serialization.load_pem_private_key(pem, password=PASSWORD.encode())
    assert key.key_size == 4096
    last_line = r.stdout.strip().splitlines()[-1]
    assert last_line == fingerprint(key.public_key())
    assert pub_path.read_bytes() == public_pem(key)

    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong")

    # The reference client loads the directory with the password, and then
    # opens what Rust seals to it.
    client = SecureCompletionClient(router_url="https://nomyo.invalid")
    client.load_keys(str(priv_path), str(pub_path), password=PASSWORD)
    sealed = v1tool("seal", "--to", pub_path, stdin=b'{"answer":42}').stdout
    assert asyncio.run(client.decrypt_response(sealed, "p"))["answer"] == 42

    # And nomyo fingerprint agrees.
    r2 = nomyo("fingerprint", priv_path, "--password-file", pwfile)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip() == last_line


def test_reference_client_key_dir_gives_same_fingerprint(tmp_path, nomyo, v1tool):
    """The reference client's generate_keys(save_to_file, password) writes a
    BestAvailableEncryption PKCS#8 file; `nomyo fingerprint` reads it."""
    d = tmp_path / "client_keys"
    client = SecureCompletionClient(router_url="https://nomyo.invalid")
    client.generate_keys(save_to_file=True, key_dir=str(d), password=PASSWORD)
    expected = fingerprint(client.private_key.public_key())
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")

    r = nomyo("fingerprint", d / "private_key.pem", "--password-file", pwfile)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected
    r = nomyo("fingerprint", d / "public_key.pem")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected

    # Rust opens, with that key, what the reference client's key would receive.
    sealed = py_seal(b"to the python key", client.private_key.public_key())
    opened = v1tool("open", "--key", d / "private_key.pem", "--password-file", pwfile, stdin=sealed).stdout
    assert opened == b"to the python key"

    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    r = nomyo("fingerprint", d / "private_key.pem", "--password-file", wrong)
    assert r.returncode == 4
    assert "wrong password" in r.stderr
    assert "not the password" not in r.stderr and PASSWORD not in r.stderr

    r = nomyo("fingerprint", d / "private_key.pem")
    assert r.returncode == 4
    assert "password" in r.stderr

    os.chmod(d / "private_key.pem", 0o640)
    r = nomyo("fingerprint", d / "private_key.pem", "--password-file", pwfile)
    assert r.returncode == 4
    assert "chmod 600" in r.stderr

"""The unmodified reference client `nomyo` 0.2.9 (`SecureChatCompletion`)
against `nomyo serve`, in front of a small OpenAI-compatible upstream double
that the test starts (upstream_double.py). Everything runs on 127.0.0.1 with
ports chosen by the OS.

Covered: a plain request, security_tier="high" with its
_metadata, 401, 403, 404, 400 on stream=True, retries after 503 (and giving up),
429, password-protected server key persistence across restarts, HTTPS with a
self-signed certificate, and a canary prompt that never reaches the server's
logs.
"""

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import stat
import time
import urllib.request
import uuid
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from client_package import (
    IS_RUST,
    APIConnectionError,
    APIError,
    AuthenticationError,
    ForbiddenError,
    InvalidRequestError,
    RateLimitError,
    SecureChatCompletion,
    SecurityError,
    ServiceUnavailableError,
)
from server_process import NomyoServer, run_to_exit
from upstream_double import UpstreamDouble

API_KEY = "test-key-" + uuid.uuid4().hex
UPSTREAM_KEY = "upstream-secret-" + uuid.uuid4().hex

# allow_http=True warns on every client; that is the point of the flag.
pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")


def config_toml(upstream: UpstreamDouble, upstream_key_file=None, maximum_over_v1=False) -> str:
    key_line = f'api_key_file = "{upstream_key_file}"' if upstream_key_file else ""
    # The maximum tier requires post-quantum encryption (v2 X-Wing) unless
    # the operator opts out, which the reference client (v1 only) needs.
    pq_line = "require_post_quantum = false" if maximum_over_v1 else ""
    return f"""
[[backends]]
name = "double"
type = "upstream"
url = "{upstream.url}"
models = ["small-model", "big-model"]
{key_line}

[tiers.standard]
backends = ["double"]
models = ["*"]

[tiers.high]
backends = ["double"]
models = ["small-model"]

[tiers.maximum]
backends = ["double"]
models = ["small-model"]
# These servers have no TPM: maximum requires attestation by default (503).
require_attestation = false
{pq_line}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, nomyo_bin, upstream):
    """One `nomyo serve` with an API key, tiers, and trace logging (for the canary)."""
    d = tmp_path_factory.mktemp("serve")
    (d / "upstream_key").write_text(UPSTREAM_KEY + "\n")
    # `maximum` is asked for over v1 (RSA) below: the operator's explicit
    # opt-out of the post-quantum requirement.
    (d / "nomyo.toml").write_text(config_toml(upstream, d / "upstream_key", maximum_over_v1=True))
    (d / "api_keys").write_text(API_KEY + "\n")
    with NomyoServer(
        nomyo_bin,
        [
            "--config", d / "nomyo.toml",
            "--key-dir", d / "server_keys",
            "--no-password",
            "--api-key-file", d / "api_keys",
            "-vv",
        ],
        env={"RUST_LOG": "trace"},
    ) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    yield


def client(url, **kw):
    kw.setdefault("api_key", API_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SecureChatCompletion(base_url=url, allow_http=url.startswith("http://"), **kw)


@pytest.fixture(scope="module")
def shared_client(server):
    """One reference client (one RSA-4096 key pair) for the simple cases."""
    return client(server.url)


def create(c, **kw):
    kw.setdefault("model", "small-model")
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    return asyncio.run(c.create(**kw))


def test_server_publishes_a_4096_bit_key(server):
    pem = urllib.request.urlopen(server.url + "/pki/public_key", timeout=10).read()
    key = serialization.load_pem_public_key(pem)
    assert key.key_size == 4096


def test_plain_request(server, upstream, shared_client):
    prompt = "What is the capital of France? é\u4e2d"
    before = int(time.time())
    r = create(
        shared_client,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        temperature=0.25,
        max_tokens=17,
        seed=5,
        stop=["\n\n"],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        response_format={"type": "json_object"},
    )
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["content"] == f"echo: {prompt}"
    assert r["model"] == "small-model"

    # The upstream got the decrypted request with every parameter, and the
    # upstream API key, never the caller's.
    assert len(upstream.requests) == 1
    got = upstream.requests[0]
    body = got["body"]
    assert body["model"] == "small-model"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    assert body["temperature"] == 0.25 and body["max_tokens"] == 17 and body["seed"] == 5
    assert body["stop"] == ["\n\n"]
    assert body["tools"][0]["function"]["name"] == "lookup"
    assert body["response_format"] == {"type": "json_object"}
    assert body.get("stream") in (None, False)
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert API_KEY not in json.dumps(got)

    meta = r["_metadata"]
    uuid.UUID(meta["payload_id"])
    assert meta["is_encrypted"] is True
    assert meta["encryption_algorithm"] == "hybrid-aes256-rsa4096"
    assert meta["response_status"] == "success"
    assert meta["security_tier"] == "standard"
    assert before - 1 <= meta["processed_at"] <= time.time() + 1
    mp = meta["memory_protection"]
    assert set(mp) >= {"platform", "memory_locking", "secure_zeroing", "core_dump_prevention"}
    assert mp["platform"] == "linux"
    assert all(isinstance(mp[k], bool) for k in ("memory_locking", "secure_zeroing", "core_dump_prevention"))
    assert meta["cuda_device"]["available"] is False


def test_security_tier_high(server, upstream, shared_client):
    r = create(shared_client, security_tier="high", messages=[{"role": "user", "content": "tier high"}])
    assert r["_metadata"]["security_tier"] == "high"
    assert r["choices"][0]["message"]["content"] == "echo: tier high"
    assert len(upstream.requests) == 1
    r = create(shared_client, security_tier="maximum")
    assert r["_metadata"]["security_tier"] == "maximum"


def test_model_not_allowed_for_tier_is_403(server, upstream, shared_client):
    with pytest.raises(ForbiddenError) as e:
        create(shared_client, model="big-model", security_tier="high")
    assert e.value.status_code == 403
    assert upstream.requests == []
    # The same model on the standard tier is fine.
    r = create(shared_client, model="big-model", security_tier="standard")
    assert r["_metadata"]["security_tier"] == "standard"


def test_unknown_model_is_404(server, upstream, shared_client):
    with pytest.raises(APIError) as e:
        create(shared_client, model="no-such-model")
    assert e.value.status_code == 404
    assert upstream.requests == []


def test_missing_or_wrong_api_key_is_401(server, upstream):
    for key in (None, "wrong-" + API_KEY):
        c = client(server.url, api_key=key) if key else SecureChatCompletion(base_url=server.url, allow_http=True)
        with pytest.raises(AuthenticationError) as e:
            create(c)
        assert e.value.status_code == 401
        # The detail does not say which check failed.
        assert API_KEY not in str(e.value)
    assert upstream.requests == []


def test_stream_true_is_400(server, upstream, shared_client):
    if IS_RUST:
        # nomyo_rs streams over v2 only: over v1 it refuses before sending.
        with pytest.raises(ValueError) as e:
            create(shared_client, stream=True)
    else:
        with pytest.raises(InvalidRequestError) as e:
            create(shared_client, stream=True)
        assert e.value.status_code == 400
    assert "stream" in str(e.value).lower()
    assert upstream.requests == []


def test_retries_after_503_then_succeeds(server, upstream, shared_client):
    # The reference client retries 503 twice (1 s, then 2 s) with the same
    # X-Payload-ID and package: the server must not take the retry for a replay.
    upstream.fail_next(503, 2)
    t = time.monotonic()
    r = create(shared_client, messages=[{"role": "user", "content": "third time lucky"}])
    elapsed = time.monotonic() - t
    assert r["choices"][0]["message"]["content"] == "echo: third time lucky"
    assert len(upstream.requests) == 3
    # The client's backoff really happened: nomyo waits 1 s then 2 s;
    # nomyo_rs the same steps, each jittered to between half and all of it.
    assert elapsed >= (1.5 if IS_RUST else 3.0), elapsed


def test_503_until_the_client_gives_up(server, upstream):
    c = client(server.url, max_retries=1)
    upstream.fail_next(503, 5)
    with pytest.raises(ServiceUnavailableError) as e:
        create(c)
    assert e.value.status_code == 503
    assert len(upstream.requests) == 2


def test_canary_prompt_never_in_server_logs(server, upstream, shared_client):
    canary = "canary-" + uuid.uuid4().hex
    r = create(shared_client, messages=[{"role": "user", "content": canary}])
    assert r["choices"][0]["message"]["content"] == f"echo: {canary}"
    assert upstream.requests[0]["body"]["messages"][0]["content"] == canary
    time.sleep(0.3)
    logs = server.output()
    assert "listening on" in logs
    # The request was logged (by id), just not its content.
    assert r["_metadata"]["payload_id"] in logs, "request not in the logs; is -vv honoured?"
    assert canary not in logs
    assert API_KEY not in logs
    assert UPSTREAM_KEY not in logs


def test_rate_limit_is_429(tmp_path, nomyo_bin, upstream):
    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    with NomyoServer(
        nomyo_bin,
        ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048",
         "--rate-limit", "1", "--rate-burst", "1"],
    ) as s:
        c = client(s.url, api_key=None, max_retries=0)
        create(c)
        with pytest.raises(RateLimitError) as e:
            create(c)
        assert e.value.status_code == 429


def fingerprint_of_pem(pem: bytes) -> str:
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_password_protected_server_key_persists(tmp_path, nomyo_bin, upstream):
    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    keys = tmp_path / "server_keys"
    pw = tmp_path / "pw"
    pw.write_text("server key pässword\n")
    args = ["--config", tmp_path / "nomyo.toml", "--key-dir", keys, "--key-password-file", pw]

    with NomyoServer(nomyo_bin, args) as s:
        served = urllib.request.urlopen(s.url + "/pki/public_key", timeout=10).read()
        c = client(s.url, api_key=None)
        assert create(c, messages=[{"role": "user", "content": "first life"}])["choices"][0]["message"]["content"] == "echo: first life"
        assert s.stop() == 0

    private = keys / "private_key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    pem = private.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password="server key pässword".encode())
    assert key.key_size == 4096
    assert fingerprint_of_pem(served) == fingerprint_of_pem(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    # Restart: the same key is published, and a new client works.
    with NomyoServer(nomyo_bin, args) as s:
        again = urllib.request.urlopen(s.url + "/pki/public_key", timeout=10).read()
        assert fingerprint_of_pem(again) == fingerprint_of_pem(served)
        c = client(s.url, api_key=None)
        assert create(c)["choices"][0]["message"]["content"] == "echo: hello"

    # The same key, its password from an environment variable instead.
    env_args = ["--config", tmp_path / "nomyo.toml", "--key-dir", keys, "--key-password-env", "NOMYO_TEST_KEY_PW"]
    with NomyoServer(nomyo_bin, env_args, env={"NOMYO_TEST_KEY_PW": "server key pässword"}) as s:
        again = urllib.request.urlopen(s.url + "/pki/public_key", timeout=10).read()
        assert fingerprint_of_pem(again) == fingerprint_of_pem(served)
        assert "server key pässword" not in s.output()
    assert private.read_bytes() == pem

    # A wrong or missing password: the server refuses to start, clearly, and
    # never replaces the key it could not open.
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    for bad in (["--key-password-file", wrong], []):
        r = run_to_exit(nomyo_bin, ["--config", tmp_path / "nomyo.toml", "--key-dir", keys, *bad])
        assert r.returncode != 0
        assert "password" in r.stderr.lower(), r.stderr
        assert "not it" not in r.stderr + r.stdout
        assert "listening on" not in r.stdout
        assert private.read_bytes() == pem


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nomyo test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_https_with_self_signed_certificate(tmp_path, nomyo_bin, upstream, monkeypatch):
    (tmp_path / "nomyo.toml").write_text(config_toml(upstream))
    cert, key = self_signed(tmp_path)
    with NomyoServer(
        nomyo_bin,
        ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--tls-cert", cert, "--tls-key", key],
    ) as s:
        assert s.url.startswith("https://127.0.0.1:"), s.url

        # Not trusted yet: the reference client refuses the certificate.
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        # (nomyo 0.2.9 wraps the failed key fetch in SecurityError("Encryption
        # operation failed"); the cause underneath is the certificate check.)
        untrusted = client(s.url, api_key=None, max_retries=0)
        with pytest.raises((SecurityError, ConnectionError, APIConnectionError)) as e:
            create(untrusted)
        chain, exc = [], e.value
        while exc is not None:
            chain.append(str(exc))
            exc = exc.__cause__ or exc.__context__
        refusal = "invalid peer certificate" if IS_RUST else "CERTIFICATE_VERIFY_FAILED"
        assert any(refusal in m for m in chain), chain
        assert upstream.requests == []
        if IS_RUST:
            # nomyo_rs verifies with rustls (webpki), which refuses this
            # certificate as its own CA even when trusted (a CA certificate
            # used as the server's); the rest is about httpx's SSL_CERT_FILE.
            return

        # httpx trusts SSL_CERT_FILE: the certificate is its own CA.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        c = client(s.url, api_key=None)
        assert c.client.allow_http is False  # a real https client
        r = create(c, messages=[{"role": "user", "content": "over TLS"}])
        assert r["choices"][0]["message"]["content"] == "echo: over TLS"
        assert r["_metadata"]["is_encrypted"] is True


def test_fingerprint_server_matches_python(server, nomyo):
    """`nomyo fingerprint --server` prints the v1 key's fingerprint as Python computes it."""
    pem = urllib.request.urlopen(server.url + "/pki/public_key", timeout=10).read()
    r = nomyo("fingerprint", "--server", server.url, "--allow-http")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert f"v1 {fingerprint_of_pem(pem)}" in lines, lines
    # A loopback server needs no --allow-http; any other plain http:// URL
    # is refused as a usage error, before anything is sent.
    r = nomyo("fingerprint", "--server", server.url)
    assert r.returncode == 0, r.stderr
    assert f"v1 {fingerprint_of_pem(pem)}" in r.stdout.strip().splitlines()
    r = nomyo("fingerprint", "--server", "http://192.0.2.1:9")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--allow-http" in r.stderr

"""TPM attestation (docs/PROTOCOL.md §14) seen by the unmodified reference
client `nomyo` 0.2.9 and checked by an independent verifier, `tpm2_checkquote`
(tpm2-tools):

- `nomyo serve --tpm` on a software TPM (swtpm, with an EK certificate from
  a local CA of the test's own): the Python client's answer at every tier
  carries `_metadata.tpm_attestation`, whose quote tpm2_checkquote accepts
  for the answer's payload id and refuses for another;
- `nomyo attest` passes against that server and exits 4 through a man in the
  middle that flips one byte of the evidence's quote; `nomyo chat
  --require-attestation` with another CA, or none, exits 4 and sends nothing;
- without a TPM, `maximum` is 503 (the client's ServiceUnavailableError)
  when the tier allows v1 (`require_post_quantum = false`), and 403
  (ForbiddenError) otherwise.

Without swtpm or tpm2-tools the TPM test is skipped, unless
NOMYO_REQUIRE_TPM=1 (then it fails).
"""

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time

import pytest
from client_package import ForbiddenError, ServiceUnavailableError
from reference_client import client, create
from server_process import NomyoServer

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

TOOLS = ["swtpm", "swtpm_setup", "swtpm_localca", "tpm2_checkquote"]


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    yield


def free_port_pair():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


@pytest.fixture
def swtpm(tmp_path):
    """A running swtpm with an EK certificate; yields its TCTI string."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        assert os.environ.get("NOMYO_REQUIRE_TPM") != "1", f"NOMYO_REQUIRE_TPM=1 but {missing} not installed"
        pytest.skip(f"{missing} not installed (scripts/sysdeps.sh install test)")
    state, ca = tmp_path / "state", tmp_path / "ca"
    state.mkdir()
    ca.mkdir()
    (tmp_path / "localca.conf").write_text(
        f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
    )
    (tmp_path / "setup.conf").write_text(
        "create_certs_tool = /usr/bin/swtpm_localca\n"
        f"create_certs_tool_config = {tmp_path / 'localca.conf'}\n"
        "create_certs_tool_options = /etc/swtpm-localca.options\n"
    )
    subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert", "--create-platform-cert",
         "--config", str(tmp_path / "setup.conf"), "--overwrite"],
        check=True, capture_output=True,
    )
    for _ in range(20):
        port = free_port_pair()
        proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--server", f"type=tcp,port={port}",
             "--ctrl", f"type=tcp,port={port + 1}", "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        if proc.poll() is None:
            try:
                yield f"swtpm:host=127.0.0.1,port={port}"
            finally:
                proc.kill()
                proc.wait()
            return
    pytest.fail("swtpm did not start")


def config(path, upstream, maximum):
    path.write_text(
        f"""
[[backends]]
name = "double"
type = "upstream"
url = "{upstream.url}"

[tiers.standard]
models = ["*"]

[tiers.high]
models = ["*"]

[tiers.maximum]
models = ["*"]
{maximum}
"""
    )
    return path


def checkquote(tmp_path, block, payload_id):
    """tpm2_checkquote on the block for `payload_id`: whether it accepts."""
    for name, field in [("ak.pub", "aik_pubkey_b64"), ("quote.msg", "quote_b64"), ("quote.sig", "signature_b64")]:
        (tmp_path / name).write_bytes(base64.b64decode(block[field]))
    qualifying = hashlib.sha256(payload_id.encode()).hexdigest()[:32]
    r = subprocess.run(
        ["tpm2_checkquote", "-u", str(tmp_path / "ak.pub"), "-m", str(tmp_path / "quote.msg"),
         "-s", str(tmp_path / "quote.sig"), "-g", "sha256", "-q", qualifying],
        capture_output=True, text=True,
    )
    return r.returncode == 0


def test_every_tier_answers_the_python_client_with_a_quote_tpm2_checkquote_verifies(
    tmp_path, nomyo_bin, upstream, swtpm
):
    # maximum over v1 needs the operator's opt-out; it keeps requiring the TPM.
    cfg = config(tmp_path / "nomyo.toml", upstream, "require_post_quantum = false")
    args = ["--config", cfg, "--ephemeral-key", "--key-bits", "2048", "--tpm", swtpm]
    with NomyoServer(nomyo_bin, args) as s:
        assert s.has_line(lambda line: "attestation" in line and "tpm sha256:" in line), s.output()
        c = client(s.url, max_retries=0)
        for tier in ["standard", "high", "maximum"]:
            r = create(c, security_tier=tier)
            meta = r["_metadata"]
            assert meta["security_tier"] == tier
            block = meta["tpm_attestation"]
            assert block["is_available"] is True, block
            assert block["pcr_banks"] == "sha256:0,7,10"
            assert set(block["pcr_values"]["sha256"]) == {"0", "7", "10"}
            assert checkquote(tmp_path, block, meta["payload_id"]), f"tier {tier}: quote refused"
            assert not checkquote(tmp_path, block, meta["payload_id"] + "-other"), "quote for another id accepted"


def test_maximum_without_a_tpm_is_503_when_it_allows_v1_and_403_otherwise(tmp_path, nomyo_bin, upstream):
    cfg = config(tmp_path / "v1.toml", upstream, "require_post_quantum = false")
    with NomyoServer(nomyo_bin, ["--config", cfg, "--ephemeral-key", "--key-bits", "2048"]) as s:
        with pytest.raises(ServiceUnavailableError) as e:
            create(client(s.url, max_retries=0), security_tier="maximum")
        assert "require_attestation" in str(e.value), e.value
        # The other tiers answer, with the block saying there is no TPM.
        r = create(client(s.url, max_retries=0), security_tier="high")
        assert r["_metadata"]["tpm_attestation"] == {"is_available": False}
    cfg = config(tmp_path / "pq.toml", upstream, "")
    with NomyoServer(nomyo_bin, ["--config", cfg, "--ephemeral-key", "--key-bits", "2048"]) as s:
        with pytest.raises(ForbiddenError) as e:
            create(client(s.url, max_retries=0), security_tier="maximum")
        assert e.value.status_code == 403 and "require_post_quantum" in str(e.value)
    assert len(upstream.requests) == 1  # only the `high` answer reached the upstream


def self_signed_ca_pem():
    """A CA certificate of nobody's TPM, made with Python `cryptography`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not this TPM's CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class Tamperer:
    """A man in the middle between `nomyo attest` and the server: forwards
    every request and answer unchanged, except that it flips one byte of the
    quote in the attestation evidence."""

    def __init__(self, target):
        import http.server
        import threading
        import urllib.error
        import urllib.request

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                req = urllib.request.Request(target + self.path, data=body, method=self.command)
                for k in ("content-type", "authorization", "x-public-key"):
                    if self.headers.get(k):
                        req.add_header(k, self.headers[k])
                try:
                    with urllib.request.urlopen(req) as r:
                        status, headers, data = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, e.headers, e.read()
                if self.path.startswith("/.well-known/nomyo-attestation?") and status == 200:
                    import json

                    evidence = json.loads(data)
                    quote = bytearray(base64.b64decode(evidence["quote_b64"]))
                    quote[-1] ^= 1
                    evidence["quote_b64"] = base64.b64encode(bytes(quote)).decode()
                    data = json.dumps(evidence).encode()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = forward
            do_POST = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_tampered_quote_or_an_untrusted_ek_is_refused(tmp_path, nomyo_bin, nomyo, upstream, swtpm):
    import json

    cfg = config(tmp_path / "nomyo.toml", upstream, "")
    ca = tmp_path / "ca"
    cas = ["--tpm-ca", ca / "swtpm-localca-rootca-cert.pem", "--tpm-ca", ca / "issuercert.pem"]
    args = ["--config", cfg, "--ephemeral-key", "--key-bits", "2048", "--tpm", swtpm]
    with NomyoServer(nomyo_bin, args) as s:
        known = ["--known-servers", tmp_path / "known_servers"]
        # Straight to the server: every step passes.
        r = nomyo("attest", "--server", s.url, *known, *cas, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        # chat --require-attestation with a CA the EK does not chain to, or
        # none: exit 4, and nothing reaches the upstream.
        foreign = tmp_path / "foreign.pem"
        foreign.write_bytes(self_signed_ca_pem())
        for trust in (["--tpm-ca", foreign], []):
            r = nomyo("chat", "--base-url", s.url, *known, "-m", "small-model", "--require-attestation",
                      *trust, "a prompt that must not leave")
            assert r.returncode == 4, r.stdout + r.stderr
            assert "is not attested" in r.stderr and "ek_chain" in r.stderr, r.stderr
        assert upstream.requests == []
        mitm = Tamperer(s.url)
        try:
            r = nomyo("attest", "--server", mitm.url, *known, *cas, "--json")
        finally:
            mitm.close()
    assert r.returncode == 4, r.stdout + r.stderr
    steps = {step["name"]: step["status"] for step in json.loads(r.stdout)["steps"]}
    assert steps["quote_signature"] == "fail", steps
    assert steps["ek_chain"] == "pass" and steps["credential_activation"] == "pass", steps

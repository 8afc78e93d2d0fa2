"""The Python package nomyo_rs against `nomyo serve` in front of the
OpenAI-compatible upstream double: protocols v1, v2 and auto, the answer dict
as `nomyo`'s, OpenAI parameters, tools and response_format passed through,
tiers, 401 with a wrong or missing API key, SecurityError on a pin mismatch,
on a required attestation the server cannot give and on a changed server key
in the known-servers file; and the errors without a server (plain HTTP
elsewhere than loopback, nothing listening).

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import hashlib
import warnings

import nomyo
import py_binding_fixtures
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from py_binding_fixtures import API_KEY, chat, hello, run, server_fingerprint

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

# The shared fixtures (py_binding_fixtures.py), found by pytest under these names.
streaming_upstream = py_binding_fixtures.streaming_upstream
server = py_binding_fixtures.server
isolated_config = py_binding_fixtures.isolated_config
fresh_upstream = py_binding_fixtures.fresh_upstream


@pytest.mark.parametrize("protocol,algorithm", [("v1", "hybrid-aes256-rsa4096"), ("v2", "ehbp-"), ("auto", "ehbp-")])
def test_protocols(nomyo_rs, server, streaming_upstream, protocol, algorithm):
    c = chat(nomyo_rs, server.url, protocol=protocol)
    prompt = f"over {protocol}: é\u4e2d"
    r = run(hello(c, prompt, temperature=0.2, max_tokens=17, seed=7, logit_bias={"50": -1}))
    assert r["choices"][0]["message"]["content"] == f"echo: {prompt}"
    assert r["object"] == "chat.completion" and r["usage"]["total_tokens"] == 10
    meta = r["_metadata"]
    assert meta["is_encrypted"] is True
    assert meta["encryption_algorithm"].startswith(algorithm)
    assert meta["payload_id"] and meta["security_tier"] == "standard"
    # Every parameter reached the upstream, unchanged.
    body = streaming_upstream.requests[-1]["body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 17 and body["seed"] == 7
    assert body["logit_bias"] == {"50": -1}


def test_the_answer_dict_is_nomyos(nomyo_rs, server):
    """The same keys, nested, as nomyo's answer (v1, where nomyo speaks)."""
    ours = run(hello(chat(nomyo_rs, server.url, protocol="v1")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_client = nomyo.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=API_KEY)
    ref = run(hello(ref_client))

    def shape(v):
        if isinstance(v, dict):
            return {k: shape(x) for k, x in v.items() if k not in ("id", "created")}
        if isinstance(v, list):
            return [shape(x) for x in v]
        return type(v).__name__

    assert shape(ours) == shape(ref)


def test_tools_and_response_format_pass_through(nomyo_rs, server, streaming_upstream):
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    c = chat(nomyo_rs, server.url)
    r = run(
        hello(
            c,
            "weather?",
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            response_format={"type": "json_object"},
        )
    )
    call = r["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and r["choices"][0]["finish_reason"] == "tool_calls"
    body = streaming_upstream.requests[-1]["body"]
    assert body["tools"] == [tool] and body["response_format"] == {"type": "json_object"}


def test_tiers(nomyo_rs, server):
    c = chat(nomyo_rs, server.url)
    for tier in ("standard", "high", "maximum"):
        assert run(hello(c, security_tier=tier))["_metadata"]["security_tier"] == tier
    with pytest.raises(nomyo_rs.ForbiddenError) as e:
        run(hello(c, model="big-model", security_tier="high"))
    assert e.value.status_code == 403 and isinstance(e.value, nomyo_rs.APIError)
    with pytest.raises(ValueError, match="Invalid security_tier"):
        run(hello(c, security_tier="extreme"))
    # protocol v1 (explicit) serves the high tier too.
    v1 = chat(nomyo_rs, server.url, protocol="v1")
    assert run(hello(v1, security_tier="high"))["_metadata"]["security_tier"] == "high"


def test_wrong_or_missing_api_key_is_401(nomyo_rs, server):
    for key in ("wrong-" + API_KEY, None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = nomyo_rs.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=key)
        with pytest.raises(nomyo_rs.AuthenticationError) as e:
            run(hello(c))
        assert e.value.status_code == 401
        assert API_KEY not in str(e.value)
    # A per-request api_key overrides the client's, as in nomyo.
    c = chat(nomyo_rs, server.url, api_key="wrong")
    assert run(hello(c, api_key=API_KEY))["_metadata"]["is_encrypted"] is True


def test_unknown_model_is_an_api_error(nomyo_rs, server):
    with pytest.raises(nomyo_rs.APIError) as e:
        run(hello(chat(nomyo_rs, server.url, protocol="v1"), model="no-such-model"))
    assert e.value.status_code in (400, 404)


def test_pin_mismatch_is_a_security_error(nomyo_rs, server, streaming_upstream):
    good = server_fingerprint(server.url)
    bad = "sha256:" + "00" * 32
    for protocol in ("v1", "v2", "auto"):
        c = chat(nomyo_rs, server.url, pins=[bad], protocol=protocol)
        with pytest.raises(nomyo_rs.SecurityError, match="pin mismatch"):
            run(hello(c))
    assert streaming_upstream.requests == []
    assert run(hello(chat(nomyo_rs, server.url, pins=[good])))["_metadata"]["is_encrypted"]
    with pytest.raises(ValueError, match="fingerprint"):
        run(hello(chat(nomyo_rs, server.url, pins=["not-a-fingerprint"])))


def test_attestation_required_refuses_an_unattested_server_and_bad_trust_inputs(
    nomyo_rs, server, streaming_upstream, tmp_path
):
    # This server has no TPM and no confidential-VM evidence: nothing is sent.
    for protocol in ("v2", "auto"):
        c = chat(nomyo_rs, server.url, protocol=protocol, require_attestation=True)
        with pytest.raises(nomyo_rs.SecurityError, match="not attested"):
            run(hello(c))
    # Attestation cannot authenticate a v1 answer.
    with pytest.raises(nomyo_rs.SecurityError):
        run(hello(chat(nomyo_rs, server.url, protocol="v1", require_attestation=True)))
    assert streaming_upstream.requests == []
    # Trust inputs that cannot be used are the caller's error, named.
    policy = tmp_path / "policy.toml"
    policy.write_text("[sev_snp]\nvmpl = 9\n")
    collateral = tmp_path / "collateral.json"
    collateral.write_text("{}")
    for kw, want in (
        (dict(attestation_policy=str(policy)), "VMPL"),
        (dict(attestation_policy=str(tmp_path / "missing.toml")), "policy file"),
        (dict(tdx_collateral=str(collateral)), "collateral"),
    ):
        c = chat(nomyo_rs, server.url, require_attestation=True, **kw)
        with pytest.raises(ValueError, match=want):
            run(hello(c))
    assert streaming_upstream.requests == []


def test_known_servers_file_records_and_refuses_a_changed_key(nomyo_rs, server, tmp_path):
    known = tmp_path / "known_servers"
    run(hello(chat(nomyo_rs, server.url, known_servers=str(known))))
    text = known.read_text()
    fp = server_fingerprint(server.url)
    assert server.url in text and fp in text
    # Someone else's key on record for this origin: refused, nothing sent.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    other_fp = "sha256:" + hashlib.sha256(der).hexdigest()
    known.write_text(text.replace(fp, other_fp))
    with pytest.raises(nomyo_rs.SecurityError, match="HAS CHANGED"):
        run(hello(chat(nomyo_rs, server.url, known_servers=str(known), protocol="v1")))


def test_plain_http_elsewhere_than_loopback_needs_allow_http(nomyo_rs):
    c = nomyo_rs.SecureChatCompletion(base_url="http://192.0.2.1:9", api_key="k")
    with pytest.raises(nomyo_rs.SecurityError):
        run(hello(c))


def test_unreachable_server_is_an_api_connection_error(nomyo_rs):
    with socket_free_port() as port:
        pass
    c = chat(nomyo_rs, f"http://127.0.0.1:{port}", max_retries=0)
    with pytest.raises(nomyo_rs.APIConnectionError):
        run(hello(c))


class socket_free_port:
    def __enter__(self):
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()

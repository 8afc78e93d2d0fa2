"""The unmodified reference client `nomyo` 0.2.9 (protocol v1: RSA-OAEP +
AES-GCM) against `nomyo serve` in its default configuration, in front of the
upstream double (upstream_double.py):

- asking for the `maximum` tier over v1 is refused with 403 (the client's
  ForbiddenError) naming the rule `require_post_quantum`, as the v2 route
  refuses X25519 there; an operator who sets `require_post_quantum = false`
  for the tier gets it served;
- the client's automatic retry (same body, same X-Payload-ID) after a
  refusal before the request reached the backend is served; after the
  backend was given the request (an upstream 500), the same bytes are a
  replay (409) and the upstream ran once.
"""


import pytest
from client_package import APIError, ForbiddenError
from reference_client import client, create
from server_process import NomyoServer

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")


@pytest.fixture(scope="module")
def default_server(nomyo_bin, upstream):
    """`nomyo serve` with nothing but an upstream (no tiers, no config file)."""
    with NomyoServer(nomyo_bin, ["--upstream", upstream.url, "--ephemeral-key", "--key-bits", "2048"]) as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    yield


def test_maximum_tier_over_v1_rsa_is_403_from_a_default_server(default_server, upstream):
    c = client(default_server.url, max_retries=0)
    with pytest.raises(ForbiddenError) as e:
        create(c, security_tier="maximum")
    assert e.value.status_code == 403
    assert "require_post_quantum" in str(e.value)
    assert upstream.requests == []
    # The other tiers are served over v1 as before.
    r = create(c, security_tier="high", messages=[{"role": "user", "content": "tier high"}])
    assert r["_metadata"]["security_tier"] == "high"
    assert r["choices"][0]["message"]["content"] == "echo: tier high"


def test_maximum_tier_over_v1_needs_the_operator_to_opt_out(tmp_path, nomyo_bin, upstream):
    (tmp_path / "nomyo.toml").write_text(
        f"""
[[backends]]
name = "double"
type = "upstream"
url = "{upstream.url}"

[tiers.standard]
models = ["*"]

[tiers.maximum]
models = ["*"]
require_post_quantum = false
# No TPM here: maximum requires attestation by default (503).
require_attestation = false
"""
    )
    with NomyoServer(nomyo_bin, ["--config", tmp_path / "nomyo.toml", "--ephemeral-key", "--key-bits", "2048"]) as s:
        r = create(client(s.url, max_retries=0), security_tier="maximum")
    assert r["_metadata"]["security_tier"] == "maximum"


def test_retry_after_a_refusal_before_dispatch_is_served(default_server, upstream):
    # The upstream refuses (503) before taking the request: the client sends
    # the same bytes again after its back-off, and they are served.
    upstream.fail_next(503, 1)
    r = create(client(default_server.url), messages=[{"role": "user", "content": "second time"}])
    assert r["choices"][0]["message"]["content"] == "echo: second time"
    assert len(upstream.requests) == 2


def test_retry_after_the_backend_ran_is_a_replay(default_server, upstream):
    # The upstream was given the request and failed (500): the client's
    # retry of the same bytes is a replay (409), and the upstream ran once.
    upstream.fail_next(500, 1)
    with pytest.raises(APIError) as e:
        create(client(default_server.url, max_retries=1))
    assert e.value.status_code == 409, e.value
    assert len(upstream.requests) == 1

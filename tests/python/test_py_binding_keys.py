"""Key files, both ways: keys written by `nomyo` 0.2.9 loaded by nomyo_rs and
keys written by nomyo_rs loaded by `nomyo` (with and without a password),
each then used for requests to `nomyo serve`; and key_dir with key_password.

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import uuid
import warnings

import nomyo
import py_binding_fixtures
import pytest
from nomyo.SecureCompletionClient import SecureCompletionClient as RefClient
from py_binding_fixtures import API_KEY, chat, hello, run

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

# The shared fixtures (py_binding_fixtures.py), found by pytest under these names.
streaming_upstream = py_binding_fixtures.streaming_upstream
server = py_binding_fixtures.server
isolated_config = py_binding_fixtures.isolated_config
fresh_upstream = py_binding_fixtures.fresh_upstream


@pytest.mark.parametrize("password", [None, "pass-" + uuid.uuid4().hex])
def test_keys_written_by_nomyo_load_in_nomyo_rs(nomyo_rs, server, tmp_path, password):
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.generate_keys(save_to_file=True, key_dir=str(tmp_path), password=password)
    ours = nomyo_rs.SecureCompletionClient(router_url=server.url, allow_http=True)
    ours.load_keys(str(tmp_path / "private_key.pem"), str(tmp_path / "public_key.pem"), password)
    assert ours.public_key_pem.strip() == ref.public_key_pem.strip()
    # The loaded key opens a real answer.
    r = run(ours.send_secure_request({"model": "small-model", "messages": [{"role": "user", "content": "k"}]}, "id", API_KEY))
    assert r["choices"][0]["message"]["content"] == "echo: k"
    if password:
        with pytest.raises(ValueError, match="Failed to load private key"):
            ours.load_keys(str(tmp_path / "private_key.pem"), password="wrong")
        with pytest.raises(ValueError, match="Failed to load private key"):
            ours.load_keys(str(tmp_path / "private_key.pem"))
    else:
        # SecureChatCompletion(key_dir=...) uses the same directory.
        c = chat(nomyo_rs, server.url, key_dir=str(tmp_path), protocol="v1")
        assert run(hello(c))["_metadata"]["is_encrypted"] is True
        assert (tmp_path / "private_key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


@pytest.mark.parametrize("password", [None, "pass-" + uuid.uuid4().hex])
def test_keys_written_by_nomyo_rs_load_in_nomyo(nomyo_rs, server, tmp_path, password):
    ours = nomyo_rs.SecureCompletionClient(router_url=server.url, allow_http=True)
    ours.generate_keys(save_to_file=True, key_dir=str(tmp_path), password=password)
    assert (tmp_path / "private_key.pem").stat().st_mode & 0o777 == 0o600
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.load_keys(str(tmp_path / "private_key.pem"), str(tmp_path / "public_key.pem"), password)
    assert ref.private_key.key_size == 4096
    assert ref.public_key_pem.strip() == ours.public_key_pem.strip()
    if password:
        with pytest.raises(ValueError):
            ref.load_keys(str(tmp_path / "private_key.pem"), password="wrong")
    else:
        # nomyo's SecureChatCompletion with that key directory gets answers.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = nomyo.SecureChatCompletion(base_url=server.url, allow_http=True, api_key=API_KEY, key_dir=str(tmp_path))
        assert run(hello(c))["choices"][0]["message"]["content"] == "echo: hello"
    # Existing keys are never overwritten.
    with pytest.raises(FileExistsError):
        ours.generate_keys(save_to_file=True, key_dir=str(tmp_path))


def test_key_dir_with_password(nomyo_rs, server, tmp_path):
    d = tmp_path / "keys"
    c = chat(nomyo_rs, server.url, key_dir=str(d), key_password="pw-1", protocol="v1")
    assert run(hello(c))["_metadata"]["is_encrypted"] is True
    assert b"ENCRYPTED" in (d / "private_key.pem").read_bytes()
    ref = RefClient(router_url=server.url, allow_http=True)
    ref.load_keys(str(d / "private_key.pem"), password="pw-1")
    again = chat(nomyo_rs, server.url, key_dir=str(d), key_password="pw-1", protocol="v1")
    assert again.client.public_key_pem == c.client.public_key_pem
    with pytest.raises(ValueError):
        chat(nomyo_rs, server.url, key_dir=str(d), key_password="wrong")

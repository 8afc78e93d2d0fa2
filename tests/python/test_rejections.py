"""Why a request was refused reaches the user, through every client.

Against `nomyo serve` with the real embedded model (conftest.py's `embedded`):
a conversation longer than the model's context, `temperature=5`, `tools`,
`logprobs`, an unknown model.

- `nomyo chat` (protocol auto, so v2): exit 1 and the whole reason on stderr.
- `nomyo proxy` with the `openai` SDK: the SDK's own `BadRequestError` /
  `NotFoundError`, whose message is the reason and whose `code` and `param`
  are OpenAI's.
- The reference client `nomyo` 0.2.9 (protocol v1, errors in clear): the code
  and a generic message only, never a token count or a parameter name.
- The `openai` SDK pointed at `nomyo serve` itself: a 400 in OpenAI's shape
  that says to use `nomyo proxy`.
- An upstream's 400 (upstream_double.py) through the proxy: its message.
"""

import asyncio
import json
import os
import re
import subprocess
import urllib.request
import warnings

import openai
import pytest
from client_package import InvalidRequestError, SecureChatCompletion
from server_process import NomyoServer

# Far more tokens than any context the embedded model is given.
LONG_PROMPT = "word " * 40000

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")


@pytest.fixture(scope="module")
def model(embedded):
    listing = json.load(urllib.request.urlopen(embedded.url + "/v1/models", timeout=10))
    return listing["data"][0]["id"]


@pytest.fixture(scope="module")
def proxy(nomyo_bin, embedded, tmp_path_factory):
    d = tmp_path_factory.mktemp("rejections")
    with NomyoServer(
        nomyo_bin,
        ["--base-url", embedded.url, "--allow-http", "--known-servers", d / "known_servers"],
        command="proxy",
    ) as p:
        yield p


def sdk(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused-locally", max_retries=0)


def chat_cli(nomyo_bin, embedded, tmp_path, *extra, stdin=""):
    env = {k: v for k, v in os.environ.items() if k not in ("NOMYO_MODEL", "NOMYO_BASE_URL", "NOMYO_API_KEY")}
    return subprocess.run(
        [
            nomyo_bin, "chat", "--allow-http", "--base-url", embedded.url,
            "--known-servers", str(tmp_path / "known_servers"), *map(str, extra),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_chat_prints_the_reason(nomyo_bin, embedded, tmp_path):
    p = chat_cli(nomyo_bin, embedded, tmp_path, "--max-tokens", 4, "-", stdin=LONG_PROMPT)
    assert p.returncode == 1, p.stderr
    assert p.stdout == ""
    assert re.search(r"the conversation is \d+ tokens long", p.stderr), p.stderr
    assert "context_length_exceeded" in p.stderr
    assert "shorten the prompt" in p.stderr
    assert "word word" not in p.stderr

    p = chat_cli(nomyo_bin, embedded, tmp_path, "--temperature", 5, "Hello")
    assert p.returncode == 1, p.stderr
    assert "`temperature` must be between 0 and 2" in p.stderr
    assert "invalid_value" in p.stderr


def test_proxy_gives_the_sdk_the_reason(proxy, model):
    client = sdk(proxy.url)
    messages = [{"role": "user", "content": "Hello"}]

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=4)
    assert e.value.status_code == 400
    assert e.value.code == "context_length_exceeded"
    assert e.value.param == "messages"
    assert re.search(r"the conversation is \d+ tokens long", e.value.message), e.value.message

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=messages, temperature=5)
    assert e.value.code == "invalid_value"
    assert e.value.param == "temperature"
    assert "between 0 and 2" in e.value.message

    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=messages, tools=tools)
    assert e.value.code == "unsupported_parameter"
    assert e.value.param == "tools"
    assert "not supported" in e.value.message

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=messages, logprobs=True)
    assert e.value.code == "unsupported_parameter"
    assert e.value.param == "logprobs"

    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=messages)
    assert e.value.code == "model_not_found"
    assert "`no-such-model`" in e.value.message
    assert model in e.value.message  # the served models are listed


def test_reference_client_over_v1_gets_the_code_only(embedded, model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = SecureChatCompletion(base_url=embedded.url, allow_http=True)
    with pytest.raises(InvalidRequestError) as e:
        asyncio.run(
            c.create(model=model, messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=4)
        )
    assert e.value.status_code == 400
    details = e.value.error_details
    assert details["error"]["code"] == "context_length_exceeded"
    assert details["error"]["param"] is None
    assert "context_length_exceeded" in str(e.value)
    # No token counts, no parameter names: they describe the encrypted request.
    text = json.dumps(details) + str(e.value)
    assert not re.search(r"\d{3,}", text), text
    assert "tokens long" not in text

    with pytest.raises(InvalidRequestError) as e:
        asyncio.run(c.create(model=model, messages=[{"role": "user", "content": "Hi"}], temperature=5))
    details = e.value.error_details
    assert details["error"]["code"] == "invalid_value"
    assert "temperature" not in json.dumps(details)


def test_openai_sdk_pointed_at_the_server_is_told_to_use_the_proxy(embedded, model):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(embedded.url).chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    assert e.value.status_code == 400
    assert e.value.code == "encryption_required"
    assert e.value.type == "invalid_request_error"
    assert "nomyo proxy --base-url" in e.value.message


def test_an_upstream_refusal_reaches_the_sdk(nomyo_bin, upstream, tmp_path):
    with NomyoServer(nomyo_bin, ["--upstream", upstream.url, "--ephemeral-key", "--key-bits", "2048"]) as server:
        with NomyoServer(
            nomyo_bin,
            ["--base-url", server.url, "--allow-http", "--known-servers", tmp_path / "known_servers"],
            command="proxy",
        ) as p:
            upstream.fail_next(400)
            with pytest.raises(openai.BadRequestError) as e:
                sdk(p.url).chat.completions.create(
                    model="small-model", messages=[{"role": "user", "content": "Hello"}]
                )
            assert "scripted 400" in e.value.message

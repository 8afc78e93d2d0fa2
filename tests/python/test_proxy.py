"""The official `openai` Python SDK, with only `base_url` changed, against
`nomyo proxy` -> `nomyo serve`. Everything runs on 127.0.0.1 with
ports chosen by the OS.

Two servers: one in front of the small OpenAI-compatible upstream double
(upstream_double.py: fast, records what arrives, answers a forced tool call),
and one with the embedded model (the goal: plain and
streamed answers from the real model through the proxy, protocol v2).

Covered: chat.completions.create plain, streamed (v2 from the embedded model;
v1, which cannot stream, as an event stream built from the whole answer),
with tools, with response_format; a 401 from the endpoint surfacing as
openai.AuthenticationError, a 403/404 as the SDK's own classes; models.list;
one curl call; the proxy's --tier as the default tier (its _metadata says
high, an X-Nomyo-Tier header still wins); and that no prompt or answer
reaches the proxy's trace logs. The embedded-model server is conftest.py's
session-wide `embedded` fixture (shared with test_cli_v2.py).
"""

import json
import subprocess
import time
import uuid

import openai
import pytest
from server_process import NomyoServer
from upstream_double import UpstreamDouble

API_KEY = "proxy-test-key-" + uuid.uuid4().hex
CANARY = "canary-" + uuid.uuid4().hex


def config_toml(upstream: UpstreamDouble) -> str:
    return f"""
[[backends]]
name = "double"
type = "upstream"
url = "{upstream.url}"
models = ["small-model", "big-model"]

[tiers.standard]
backends = ["double"]
models = ["small-model"]

[tiers.high]
backends = ["double"]
models = ["*"]
"""


@pytest.fixture(autouse=True)
def fresh_upstream(upstream):
    upstream.reset()
    yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("proxy")
    (d / "api_keys").write_text(API_KEY + "\n")
    (d / "client_key").write_text(API_KEY + "\n")
    return d


@pytest.fixture(scope="module")
def server(workdir, nomyo_bin, upstream):
    (workdir / "nomyo.toml").write_text(config_toml(upstream))
    args = ["--config", workdir / "nomyo.toml", "--key-dir", workdir / "server_keys", "--no-password"]
    with NomyoServer(nomyo_bin, [*args, "--api-key-file", workdir / "api_keys"]) as s:
        yield s


def start_proxy(nomyo_bin, workdir, server_url, *extra, env=None):
    return NomyoServer(
        nomyo_bin,
        [
            "--base-url", server_url,
            "--allow-http",
            "--known-servers", workdir / "known_servers",
            *extra,
        ],
        command="proxy",
        env=env,
    )


@pytest.fixture(scope="module")
def proxy(nomyo_bin, workdir, server):
    """Protocol auto (v2 here), trace logging for the canary check."""
    with start_proxy(
        nomyo_bin, workdir, server.url, "--api-key-file", workdir / "client_key", "-vv", env={"RUST_LOG": "trace"}
    ) as p:
        yield p


@pytest.fixture(scope="module")
def proxy_v1(nomyo_bin, workdir, server):
    with start_proxy(nomyo_bin, workdir, server.url, "--api-key-file", workdir / "client_key", "--protocol", "v1") as p:
        yield p


def sdk(proxy_process, **kw):
    # The only change an application makes: the base URL.
    return openai.OpenAI(base_url=proxy_process.url + "/v1", api_key="unused-locally", max_retries=0, **kw)


def test_plain(proxy, upstream):
    prompt = f"What is the capital of France? é中 {CANARY}"
    raw = sdk(proxy).chat.completions.with_raw_response.create(
        model="small-model",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        temperature=0.25,
        max_tokens=17,
        seed=5,
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    r = raw.parse()
    assert isinstance(r, openai.types.chat.ChatCompletion)
    assert r.choices[0].message.content == f"echo: {prompt}"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "small-model"
    assert r.usage.total_tokens == 10
    assert r._request_id.startswith("proxy-")
    meta = raw.http_response.json()["_metadata"]
    assert meta["is_encrypted"] is True and meta["protocol"] == "v2"

    body = upstream.requests[0]["body"]
    assert body["messages"][1]["content"] == prompt
    assert body["temperature"] == 0.25 and body["max_tokens"] == 17 and body["seed"] == 5


def test_streamed_v1_is_built_from_the_whole_answer(proxy_v1, upstream):
    stream = sdk(proxy_v1).chat.completions.create(
        model="small-model",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage.total_tokens == 10
    # v1 carried a plain request.
    body = upstream.requests[0]["body"]
    assert "stream" not in body and "stream_options" not in body


def test_tools(proxy, proxy_v1, upstream):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True,
            },
        }
    ]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    for p in (proxy, proxy_v1):
        upstream.reset()
        r = sdk(p).chat.completions.create(
            model="small-model",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=False,
        )
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and call.id == "call_double_1"
        assert json.loads(call.function.arguments) == {}
        assert r.choices[0].finish_reason == "tool_calls"
        body = upstream.requests[0]["body"]
        assert body["tools"] == tools
        assert body["tool_choice"] == choice
        assert body["parallel_tool_calls"] is False

    # Streamed over v1: the tool call arrives as a streamed tool-call delta.
    upstream.reset()
    chunks = list(
        sdk(proxy_v1).chat.completions.create(
            model="small-model",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            tool_choice=choice,
            stream=True,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].index == 0 and calls[0].function.name == "get_weather"


def test_response_format(proxy, upstream):
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
        },
    }
    r = sdk(proxy).chat.completions.create(
        model="small-model", messages=[{"role": "user", "content": "json please"}], response_format=fmt
    )
    assert r.choices[0].message.content == "echo: json please"
    assert upstream.requests[0]["body"]["response_format"] == fmt


def test_errors_are_the_sdks_own_exceptions(nomyo_bin, workdir, server, proxy, upstream):
    # 401 from the endpoint (the proxy sends a wrong API key).
    with start_proxy(nomyo_bin, workdir, server.url, "--api-key-env", "WRONG_KEY", env={"WRONG_KEY": "nope"}) as p:
        with pytest.raises(openai.AuthenticationError) as e:
            sdk(p).chat.completions.create(model="small-model", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 401
        assert e.value.body["type"] == "authentication_error"
    # 403: the model is not allowed on the tier the proxy asks for.
    with pytest.raises(openai.PermissionDeniedError):
        sdk(proxy, default_headers={"X-Nomyo-Tier": "standard"}).chat.completions.create(
            model="big-model", messages=[{"role": "user", "content": "x"}]
        )
    r = sdk(proxy, default_headers={"X-Nomyo-Tier": "high"}).chat.completions.create(
        model="big-model", messages=[{"role": "user", "content": "x"}]
    )
    assert r.choices[0].message.content == "echo: x"
    # 404: unknown model.
    with pytest.raises(openai.NotFoundError):
        sdk(proxy).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    # 503 from the upstream: the SDK's InternalServerError, with Retry-After.
    upstream.fail_next(503)
    with pytest.raises(openai.InternalServerError) as e:
        sdk(proxy).chat.completions.create(model="small-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503 and "retry-after" in e.value.response.headers


def test_tier_flag_applies_to_requests_without_the_header(nomyo_bin, workdir, server, upstream):
    # big-model is allowed on tier high only (config_toml); the proxy's --tier
    # high is what every request without X-Nomyo-Tier asks for.
    with start_proxy(nomyo_bin, workdir, server.url, "--api-key-file", workdir / "client_key", "--tier", "high") as p:
        raw = sdk(p).chat.completions.with_raw_response.create(
            model="big-model", messages=[{"role": "user", "content": "tiered"}]
        )
        assert raw.http_response.status_code == 200
        assert raw.parse().choices[0].message.content == "echo: tiered"
        meta = raw.http_response.json()["_metadata"]
        assert meta["security_tier"] == "high"
        assert meta["protocol"] == "v2"
        assert upstream.requests[-1]["body"]["model"] == "big-model"
        # A request's own header still wins over --tier.
        with pytest.raises(openai.PermissionDeniedError):
            sdk(p, default_headers={"X-Nomyo-Tier": "standard"}).chat.completions.create(
                model="big-model", messages=[{"role": "user", "content": "x"}]
            )
        r = sdk(p, default_headers={"X-Nomyo-Tier": "standard"}).chat.completions.with_raw_response.create(
            model="small-model", messages=[{"role": "user", "content": "x"}]
        )
        assert r.http_response.json()["_metadata"]["security_tier"] == "standard"


def test_models_list(proxy):
    ids = [m.id for m in sdk(proxy).models.list()]
    assert {"small-model", "big-model"} <= set(ids)
    assert sdk(proxy).models.retrieve("small-model").id == "small-model"
    with pytest.raises(openai.NotFoundError):
        sdk(proxy).models.retrieve("no-such-model")


def test_curl(proxy):
    out = subprocess.run(
        [
            "curl", "-sS", "--fail-with-body", proxy.url + "/v1/chat/completions",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"model": "small-model", "messages": [{"role": "user", "content": "from curl"}]}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["content"] == "echo: from curl"


def test_remote_listen_needs_flag_and_token(nomyo_bin):
    p = subprocess.run(
        [nomyo_bin, "proxy", "--listen", "0.0.0.0:0", "--base-url", "http://127.0.0.1:9", "--allow-http"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "--allow-remote" in p.stderr


def test_a_pin_mismatch_stops_the_proxy_at_start(nomyo_bin, server):
    wrong = "sha256:" + "ab" * 32
    p = subprocess.run(
        [nomyo_bin, "proxy", "--listen", "127.0.0.1:0", "--base-url", server.url, "--allow-http", "--pin", wrong],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 4, p.stderr
    assert "pin mismatch" in p.stderr and wrong in p.stderr
    assert "listening on" not in p.stdout


def test_remote_listen_with_an_access_token(nomyo_bin, workdir, server):
    token = "local-" + uuid.uuid4().hex
    with NomyoServer(
        nomyo_bin,
        [
            "--base-url", server.url, "--allow-http", "--known-servers", workdir / "known_servers",
            "--api-key-file", workdir / "client_key", "--allow-remote", "--access-token-env", "PROXY_TOKEN",
        ],
        command="proxy",
        listen="0.0.0.0:0",
        env={"PROXY_TOKEN": token},
    ) as p:
        # Bound to 0.0.0.0; reached here through 127.0.0.1.
        port = p.url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=base, api_key=token, max_retries=0)
        r = ok.chat.completions.create(model="small-model", messages=[{"role": "user", "content": "token"}])
        assert r.choices[0].message.content == "echo: token"


def test_nothing_of_the_content_is_logged(proxy):
    # Runs after test_plain (file order): the canary prompt and its echo went
    # through this proxy with trace logging on.
    time.sleep(0.2)
    out = proxy.output()
    assert "chat request" in out  # the debug log is really on
    assert CANARY not in out
    assert API_KEY not in out


def test_embedded_model_plain_and_streamed(nomyo_bin, workdir, embedded):
    with start_proxy(nomyo_bin, workdir, embedded.url) as p:
        client = sdk(p)
        model = client.models.list().data[0].id
        messages = [{"role": "user", "content": "Name a colour."}]
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        assert r.choices[0].message.content
        assert r.usage.completion_tokens <= 8
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, stream=True))
        assert len(chunks) >= 3  # role, tokens, finish: really streamed
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

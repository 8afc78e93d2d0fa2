"""nomyo's own examples (doc/examples.md of the nomyo 0.2.9 sdist, fetched
from PyPI here, never copied into the repository) run with nomyo_rs against
`nomyo serve`, with three rewrites only: the import (`nomyo` -> `nomyo_rs`),
the base URL (the local server, with allow_http=True) and the model name (one
the server has). The backend is the OpenAI-compatible upstream double, which
accepts tools, and every tier is open (maximum without attestation).

Each example runs as a script in a fresh interpreter; a wrapper around
SecureChatCompletion.create records what every call returned or raised, and
the test checks that against what the example demonstrates (answers with
`_metadata`, or the AuthenticationError of the error-handling example against
a server that does not know its API key).
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
import uuid

import pytest
from server_process import NomyoServer
from upstream_double import UpstreamDouble

NOMYO_VERSION = "0.2.9"
MODEL = "small-model"
ENV_API_KEY = "env-key-" + uuid.uuid4().hex

# Runs one example with SecureChatCompletion.create recorded (argv: the
# example's file, the record file).
RUNNER = r"""
import json, runpy, sys
import nomyo_rs

record = []
original = nomyo_rs.SecureChatCompletion.create

async def create(self, *args, **kwargs):
    try:
        answer = await original(self, *args, **kwargs)
    except BaseException as e:
        record.append({"error": type(e).__name__, "status_code": getattr(e, "status_code", None)})
        raise
    record.append({"answer": answer, "security_tier": kwargs.get("security_tier")})
    return answer

nomyo_rs.SecureChatCompletion.create = create
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
finally:
    with open(sys.argv[2], "w") as f:
        json.dump(record, f)
"""


def fetch_examples(dest) -> str:
    """doc/examples.md of the nomyo sdist from PyPI (pip download, else the
    PyPI JSON API)."""
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
         f"nomyo=={NOMYO_VERSION}", "-d", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    sdists = sorted(dest.glob(f"nomyo-{NOMYO_VERSION}.tar.gz"))
    if not sdists:
        meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/nomyo/{NOMYO_VERSION}/json", timeout=60))
        url = next(u["url"] for u in meta["urls"] if u["packagetype"] == "sdist")
        target = dest / url.rsplit("/", 1)[1]
        target.write_bytes(urllib.request.urlopen(url, timeout=120).read())
        sdists = [target]
    assert sdists, f"cannot fetch the nomyo {NOMYO_VERSION} sdist: {p.stderr}"
    with tarfile.open(sdists[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/doc/examples.md"))
        return tar.extractfile(member).read().decode()


def parse_examples(markdown: str) -> dict:
    """{"### title": python code} for every python block under a heading."""
    examples = {}
    title = None
    for m in re.finditer(r"^(#{2,4}) ([^\n]+)$|^```python\n(.*?)^```", markdown, re.M | re.S):
        if m.group(1):
            title = m.group(2).strip()
        elif title:
            examples[title] = m.group(3)
    return examples


def rewrite(code: str, base_url: str) -> str:
    """The three rewrites: import, base URL with allow_http=True, model."""
    assert "from nomyo import" in code
    code = code.replace("from nomyo import", "from nomyo_rs import")
    # The example's own base_url and allow_http arguments give way to the
    # local server's.
    code = re.sub(r'\bbase_url="[^"]*",?', "", code)
    code = re.sub(r"\ballow_http=(True|False),?", "", code)
    code = code.replace("SecureChatCompletion(", f'SecureChatCompletion(base_url="{base_url}", allow_http=True, ')
    code = code.replace('"Qwen/Qwen3-0.6B"', f'"{MODEL}"')
    assert "nomyo import" not in code.replace("nomyo_rs import", "")
    return code


def config(upstream, api_keys_file=None):
    return f"""
[[backends]]
name = "double"
type = "upstream"
url = "{upstream.url}"
models = ["{MODEL}"]

[tiers.standard]
backends = ["double"]
models = ["*"]
[tiers.high]
backends = ["double"]
models = ["*"]
[tiers.maximum]
backends = ["double"]
models = ["*"]
require_attestation = false
"""


@pytest.fixture(scope="module")
def examples(nomyo_rs, tmp_path_factory):
    found = parse_examples(fetch_examples(tmp_path_factory.mktemp("sdist")))
    assert len(found) >= 12, sorted(found)
    return found


@pytest.fixture(scope="module")
def servers(nomyo_rs, nomyo_bin, tmp_path_factory):
    """Three `nomyo serve` in front of one upstream double: one that knows
    the examples' API keys, one open (the custom-base-URL example sends
    none), one whose only API key is another (the error-handling example's
    AuthenticationError)."""
    upstream = UpstreamDouble(models=(MODEL,))
    d = tmp_path_factory.mktemp("examples")
    (d / "nomyo.toml").write_text(config(upstream))
    (d / "keys").write_text(f"your-api-key-here\nyour-api-key\n{ENV_API_KEY}\n")
    (d / "other_keys").write_text("another-key-" + uuid.uuid4().hex + "\n")
    common = ["--config", d / "nomyo.toml", "--no-password"]
    with NomyoServer(nomyo_bin, [*common, "--key-dir", d / "k1", "--api-key-file", d / "keys"]) as keyed, NomyoServer(
        nomyo_bin, [*common, "--key-dir", d / "k2"]
    ) as open_, NomyoServer(nomyo_bin, [*common, "--key-dir", d / "k3", "--api-key-file", d / "other_keys"]) as other:
        yield {"keyed": keyed, "open": open_, "other": other, "upstream": upstream}
    upstream.close()


def run_example(code, server, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(rewrite(code, server.url))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    record_file = tmp_path / "record.json"
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "NOMYO_API_KEY": ENV_API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    p = subprocess.run(
        [sys.executable, "-W", "ignore", str(runner), str(script), str(record_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    record = json.loads(record_file.read_text()) if record_file.exists() else []
    return p, record


def answers(record):
    assert all("answer" in r for r in record), record
    for r in record:
        meta = r["answer"]["_metadata"]
        assert meta["is_encrypted"] is True and meta["payload_id"], meta
        assert meta["encryption_algorithm"].startswith("ehbp-"), meta  # protocol auto chose v2
    return [r["answer"] for r in record]


def content(answer):
    return answer["choices"][0]["message"]["content"]


# title -> (server, number of answers, check(answers, stdout, upstream))
EXPECTED = {
    "Simple Chat Completion": ("keyed", 1, lambda a, out, u: content(a[0]) == "echo: Hello, how are you?" and content(a[0]) in out),
    "Chat with System Message": (
        "keyed",
        1,
        lambda a, out, u: content(a[0]) == "echo: What is the capital of France?"
        and u.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."},
    ),
    "Using Different Security Tiers": (
        "keyed",
        3,
        lambda a, out, u: [x["_metadata"]["security_tier"] for x in a] == ["standard", "high", "maximum"],
    ),
    "Using Tools": (
        "keyed",
        1,
        lambda a, out, u: content(a[0]) in out and u.requests[-1]["body"]["tools"][0]["function"]["name"] == "get_weather",
    ),
    "Error Handling": ("keyed", 1, lambda a, out, u: "echo: Hello" in out),
    "Custom Base URL": ("open", 1, lambda a, out, u: "echo: Hello" in out),
    "API Key Authentication": ("keyed", 1, lambda a, out, u: "echo: Hello" in out),
    "Chat Application with History": (
        "keyed",
        2,
        lambda a, out, u: [m["role"] for m in u.requests[-1]["body"]["messages"]] == ["user", "assistant", "user"]
        and "Assistant: echo: Can you tell me about secure chat clients?" in out,
    ),
    "Data Processing with Tools": (
        "keyed",
        1,
        lambda a, out, u: u.requests[-1]["body"]["tools"][0]["function"]["name"] == "calculate_statistics"
        and "echo: Process this data" in out,
    ),
    "Batch Processing": (
        "keyed",
        3,
        lambda a, out, u: sorted(content(x) for x in a)
        == sorted(f"echo: {q}" for q in ["What is the weather today?", "Tell me about Python programming", "How to learn machine learning?"])
        and out.count("Query ") == 3,
    ),
    "Custom Client Configuration": ("keyed", 1, lambda a, out, u: "echo: Hello" in out),
    "Environment-Based Configuration (strongly recommended)": ("keyed", 1, lambda a, out, u: "echo: Hello" in out),
}


def test_every_example_is_covered(examples):
    assert sorted(examples) == sorted(EXPECTED)


@pytest.mark.parametrize("title", sorted(EXPECTED))
def test_example(examples, servers, tmp_path, title):
    server_name, count, check = EXPECTED[title]
    upstream = servers["upstream"]
    upstream.reset()
    p, record = run_example(examples[title], servers[server_name], tmp_path)
    assert p.returncode == 0, f"{title} failed:\n{p.stdout}\n{p.stderr}"
    got = answers(record)
    assert len(got) == count, record
    assert len(upstream.requests) == count
    assert check(got, p.stdout, upstream), p.stdout


def test_error_handling_example_shows_the_authentication_error(examples, servers, tmp_path):
    upstream = servers["upstream"]
    upstream.reset()
    p, record = run_example(examples["Error Handling"], servers["other"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert record == [{"error": "AuthenticationError", "status_code": 401}]
    assert "Authentication failed: " in p.stdout
    assert upstream.requests == []

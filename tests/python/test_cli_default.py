"""The main job as a user types it: `nomyo serve` with
its defaults (listen 127.0.0.1:12434, the embedded model) and then, with no
server named anywhere,

    nomyo chat --seed 1 --temperature 0.7 "What is the capital of France?"

answers with non-empty text and true usage counts. With no --base-url and no
$NOMYO_BASE_URL the client commands talk to that local default, which is
loopback, so no --allow-http is needed (nor for any other loopback URL); an
http:// URL off this host still needs it. How long the answer takes is measured in BENCHMARKS.md, not asserted.

HOME is a temporary directory, so the known-servers file (trust on first use,
~/.config/nomyo/known_servers) is this test's own.
"""

import json
import os
import socket
import subprocess

import pytest
from server_process import NomyoServer

LOCAL = ("127.0.0.1", 12434)
PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, nomyo_bin):
    with socket.socket() as s:
        try:
            s.bind(LOCAL)
        except OSError:
            pytest.fail(f"{LOCAL[0]}:{LOCAL[1]} (nomyo serve's default address) is taken by another process")
    home = tmp_path_factory.mktemp("home")
    with NomyoServer(nomyo_bin, ["--key-dir", home / "server_keys", "--no-password"], listen="127.0.0.1:12434") as s:
        assert s.url == "http://127.0.0.1:12434"
        yield home


def chat(nomyo_bin, home, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("NOMYO_BASE_URL", "NOMYO_MODEL", "NOMYO_API_KEY")}
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(
        [nomyo_bin, "chat", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL,
    )


def test_the_literal_command_answers(nomyo_bin, default_server):
    p = chat(nomyo_bin, default_server, "--seed", 1, "--temperature", 0.7, PROMPT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()
    # First contact with the default server was recorded under this HOME.
    assert "first contact with http://127.0.0.1:12434" in p.stderr
    assert (default_server / ".config" / "nomyo" / "known_servers").read_text().strip()


def test_true_usage_and_same_seed_same_answer(nomyo_bin, default_server):
    answers = []
    for _ in range(2):
        p = chat(nomyo_bin, default_server, "--seed", 1, "--temperature", 0.7, "--json", PROMPT)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout)
        text = r["choices"][0]["message"]["content"]
        assert text.strip()
        u = r["usage"]
        assert u["prompt_tokens"] > len(PROMPT.split())  # the chat template adds its own tokens
        assert 0 < u["completion_tokens"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert r["choices"][0]["finish_reason"] in ("stop", "length")
        answers.append((text, u))
    assert answers[0] == answers[1]


def test_loopback_urls_need_no_allow_http_other_http_urls_do(nomyo_bin, default_server):
    # The default server named explicitly, and the OpenAI habit of a /v1 suffix.
    for url in ("http://127.0.0.1:12434", "http://localhost:12434/v1"):
        p = chat(nomyo_bin, default_server, "--base-url", url, "--max-tokens", 4, "Hi")
        assert p.returncode == 0, (url, p.stderr)
        assert p.stdout.strip()
    # A plain-HTTP server off this host: refused before anything is sent.
    p = chat(nomyo_bin, default_server, "--base-url", "http://192.0.2.1:12434", "--max-tokens", 4, "Hi")
    assert p.returncode == 2, p.stderr
    assert "--allow-http" in p.stderr
    assert not p.stdout

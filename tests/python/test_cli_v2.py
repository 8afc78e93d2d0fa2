"""`nomyo chat` over protocol v2 against `nomyo serve` with the real embedded
model: `nomyo chat --protocol v2 --stream` streams from the embedded
model. The server is conftest.py's session-wide `embedded`.

What `nomyo chat` prints (crates/nomyo-cli/src/cmd/chat.rs): with --stream
--json one `chat.completion.chunk` JSON per line, the first carrying the
server's sealed `_metadata` (protocol, tier, `hpke.kem`); with --json alone
the whole completion, whose `_metadata` also has the client's
`encryption_algorithm` (`ehbp-x-wing`). `nomyo chat` has no flag that forces
X25519 (v2 always prefers X-Wing), so "the maximum tier refuses X25519" is
tested with the X25519-only tinfoil-ehbp client in test_v2_ehbp.py, not here.
"""

import json
import os
import subprocess
import time

import pytest


@pytest.fixture
def chat(nomyo_bin, embedded, tmp_path):
    """Argument list of `nomyo chat` against the embedded server, with a fresh
    known-servers file; the caller's NOMYO_MODEL (the model name chat sends)
    is kept away, so chat asks the server for its only model."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOMYO_MODEL", "NOMYO_BASE_URL", "NOMYO_API_KEY")}
    base = [
        nomyo_bin, "chat", "--allow-http", "--base-url", embedded.url,
        "--known-servers", tmp_path / "known_servers",
    ]

    def args(*extra):
        return [*map(str, base), *map(str, extra)]

    def run(*extra, timeout=120):
        return subprocess.run(
            args(*extra), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )

    run.args = args
    run.env = env
    return run


def v2_metadata(meta, tier="standard"):
    assert meta["protocol"] == "v2"
    assert meta["is_encrypted"] is True
    assert meta["security_tier"] == tier
    assert meta["hpke"] == {"kem": "x-wing", "kdf": "hkdf-sha256", "aead": "aes-256-gcm", "post_quantum": True}


def test_stream_json_arrives_incrementally(chat):
    # Counting gives a long, deterministic answer (temperature 0), so the
    # model uses its whole token budget and the stream has time to show.
    p = subprocess.Popen(
        chat.args(
            "--protocol", "v2", "--stream", "--json", "--max-tokens", 48, "--temperature", 0,
            "Count from 1 to 100, separated by commas.",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=chat.env,
        text=True,
    )
    start = time.monotonic()
    lines = []  # (seconds since start, line)
    for line in p.stdout:
        lines.append((time.monotonic() - start, line))
    rc = p.wait(timeout=120)
    total = time.monotonic() - start
    stderr = p.stderr.read()
    assert rc == 0, stderr

    chunks = [json.loads(line) for _, line in lines]
    assert len(chunks) >= 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    # The sealed _metadata rides on the first chunk: v2 with X-Wing.
    v2_metadata(chunks[0]["_metadata"])
    assert not any("_metadata" in c for c in chunks[1:])
    content = [(t, c["choices"][0]["delta"]["content"]) for (t, _), c in zip(lines, chunks)
               if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) >= 10, chunks  # the model really generated a long answer
    assert "".join(text for _, text in content).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    # A real stream: the first token was printed well before the process
    # ended (one write of everything at the end would put both at the end).
    first = content[0][0]
    assert first < 0.8 * total, f"first token at {first:.2f} s of {total:.2f} s"
    assert content[-1][0] - first > 0.1 * total, f"tokens from {first:.2f} s to {content[-1][0]:.2f} s of {total:.2f} s"


def test_stream_text(chat):
    p = chat("--protocol", "v2", "--stream", "--max-tokens", 16, "Name a colour.")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()
    assert p.stdout.endswith("\n")
    # Text, not the chunks' JSON.
    assert "chat.completion.chunk" not in p.stdout
    # First contact: the server key that signs the v2 keys was recorded.
    assert "first contact" in p.stderr


def test_auto_picks_v2_with_x_wing(chat):
    p = chat("--protocol", "auto", "--json", "--max-tokens", 4, "Hi")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["object"] == "chat.completion"
    v2_metadata(r["_metadata"])
    assert r["_metadata"]["encryption_algorithm"] == "ehbp-x-wing"


@pytest.mark.parametrize("stream", [False, True])
def test_maximum_tier_over_x_wing(chat, stream):
    extra = ["--stream"] if stream else []
    p = chat("--protocol", "v2", "--tier", "maximum", "--json", "--max-tokens", 4, *extra, "Hi")
    assert p.returncode == 0, p.stderr
    if stream:
        meta = json.loads(p.stdout.splitlines()[0])["_metadata"]
    else:
        meta = json.loads(p.stdout)["_metadata"]
        assert meta["encryption_algorithm"] == "ehbp-x-wing"
    v2_metadata(meta, tier="maximum")


def test_v1_cannot_stream(chat):
    p = chat("--protocol", "v1", "--stream", "Hi")
    assert p.returncode == 2, p.stderr  # usage
    assert "--protocol v2" in p.stderr
    assert p.stdout == ""



def test_model_env_vars_do_not_clash(chat, nomyo_bin, tmp_path):
    """One shell can run both commands: `nomyo serve` takes its model *file*
    from NOMYO_MODEL_FILE, `nomyo chat` its model *name* from NOMYO_MODEL.
    (They once shared NOMYO_MODEL, and chat sent the file path as the name.)"""
    # chat ignores NOMYO_MODEL_FILE: it still asks the server for its model.
    env = {**chat.env, "NOMYO_MODEL_FILE": str(tmp_path / "some.gguf")}
    p = subprocess.run(chat.args("--protocol", "v2", "--max-tokens", 4, "Hi"),
                       capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    # chat sends NOMYO_MODEL as the name: an unknown one is refused.
    env = {**chat.env, "NOMYO_MODEL": "no-such-model"}
    p = subprocess.run(chat.args("--protocol", "v2", "--max-tokens", 4, "Hi"),
                       capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "model" in p.stderr.lower()
    # serve reads NOMYO_MODEL_FILE (a missing file is an error naming it)...
    missing = tmp_path / "missing-model.gguf"
    p = subprocess.run([nomyo_bin, "serve", "--listen", "127.0.0.1:0", "--ephemeral-key"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ, "NOMYO_MODEL_FILE": str(missing), "NOMYO_MODEL": "any-name"})
    assert p.returncode != 0
    assert str(missing) in p.stderr

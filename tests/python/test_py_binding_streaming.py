"""Streaming with the Python package nomyo_rs against `nomyo serve` (v2):
the chunks, leaving a stream early (aclose, or dropped) without holding the
client up, and v1's refusal to stream.

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import time

import py_binding_fixtures
import pytest
from py_binding_fixtures import chat, hello, run

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

# The shared fixtures (py_binding_fixtures.py), found by pytest under these names.
streaming_upstream = py_binding_fixtures.streaming_upstream
server = py_binding_fixtures.server
isolated_config = py_binding_fixtures.isolated_config
fresh_upstream = py_binding_fixtures.fresh_upstream


def test_streaming(nomyo_rs, server, streaming_upstream):
    c = chat(nomyo_rs, server.url)
    prompt = "one two three four"

    async def go():
        stream = await hello(c, prompt, stream=True)
        return [chunk async for chunk in stream]

    chunks = run(go())
    assert len(chunks) >= 5
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == f"echo: {prompt}"
    assert streaming_upstream.requests[-1]["body"]["stream"] is True


def test_leaving_a_stream_early_cancels_it(nomyo_rs, server, streaming_upstream):
    streaming_upstream.chunk_delay = 0.3
    c = chat(nomyo_rs, server.url)
    words = " ".join(f"w{i}" for i in range(30))  # about 9 s when read to the end

    async def go():
        t0 = time.monotonic()
        stream = await hello(c, words, stream=True)
        async for chunk in stream:
            assert chunk["object"] == "chat.completion.chunk"
            break
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        first = time.monotonic() - t0
        # The client is still usable, and the left stream held nothing up.
        r = await hello(c, "after")
        return first, r, time.monotonic() - t0

    first, r, total = run(go())
    assert r["choices"][0]["message"]["content"] == "echo: after"
    assert total < 5, f"leaving the stream took {total:.1f} s"

    async def dropped():
        stream = await hello(c, words, stream=True)
        await stream.__anext__()
        del stream  # dropped without aclose: the connection closes too
        return await hello(c, "again")

    t0 = time.monotonic()
    assert run(dropped())["choices"][0]["message"]["content"] == "echo: again"
    assert time.monotonic() - t0 < 5


def test_streaming_needs_v2(nomyo_rs, server):
    with pytest.raises(ValueError, match="v2"):
        run(hello(chat(nomyo_rs, server.url, protocol="v1"), stream=True))

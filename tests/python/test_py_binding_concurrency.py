"""Concurrency with the Python package nomyo_rs against `nomyo serve`: 32
concurrent requests in one event loop (v1 and v2), and the GIL released while
requests are sealed and opened.

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import asyncio
import threading
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


def test_32_concurrent_requests_in_one_event_loop(nomyo_rs, server, streaming_upstream):
    for protocol in ("v1", "v2"):
        c = chat(nomyo_rs, server.url, protocol=protocol)

        async def go():
            return await asyncio.gather(*(c.acreate(model="small-model", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(32)))

        answers = run(go())
        assert [a["choices"][0]["message"]["content"] for a in answers] == [f"echo: q{i}" for i in range(32)]
        assert len({a["_metadata"]["payload_id"] for a in answers}) == 32


def test_the_event_loop_runs_while_requests_are_sealed_and_opened(nomyo_rs, server):
    """The GIL is released: a Python thread and the event loop both make
    progress during 16 concurrent requests."""
    c = chat(nomyo_rs, server.url, protocol="v1")
    run(hello(c))  # keys generated, server key fetched
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    async def go():
        async def heartbeat():
            beats = 0
            while not done.is_set():
                beats += 1
                await asyncio.sleep(0.005)
            return beats

        done = asyncio.Event()
        hb = asyncio.create_task(heartbeat())
        await asyncio.gather(*(hello(c, f"x{i}") for i in range(16)))
        done.set()
        return await hb

    t = threading.Thread(target=spin)
    t.start()
    try:
        beats = run(go())
    finally:
        stop.set()
        t.join()
    assert beats >= 1 and len(ticks) >= 5

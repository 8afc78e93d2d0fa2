"""The reference client `nomyo` 0.2.9 as the tests drive it: one
SecureChatCompletion for a URL (plain HTTP allowed, its warning silenced),
and one chat completion with the tests' default model and message."""

import asyncio
import warnings

from client_package import SecureChatCompletion


def client(url, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SecureChatCompletion(base_url=url, allow_http=True, **kw)


def create(c, **kw):
    kw.setdefault("model", "small-model")
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    return asyncio.run(c.create(**kw))

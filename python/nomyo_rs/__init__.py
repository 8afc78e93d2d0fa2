"""nomyo_rs: the NOMYO Rust client for Python.

A drop-in for the reference client `nomyo` 0.2.9: the same classes
(`SecureChatCompletion`, `SecureCompletionClient`), signatures, answer dicts
and exception classes, with the sealing, opening and network I/O done in
Rust (crates/nomyo-client) without holding the GIL. Beyond `nomyo`: protocol
v2 (`protocol="auto" | "v2" | "v1"`), streaming (`stream=True`), server key
pins and the known-servers file, and required attestation.

    from nomyo_rs import SecureChatCompletion

    client = SecureChatCompletion(base_url="https://api.nomyo.ai", api_key="...")
    answer = await client.create(model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "Hello"}])
    print(answer["choices"][0]["message"]["content"])
"""

# `nomyo` has the modules nomyo.nomyo (SecureChatCompletion) and
# nomyo.SecureCompletionClient (the client class and the exceptions); imports
# from those paths work here too. The package attribute SecureCompletionClient
# is the class, as the documentation of `nomyo` uses it.
from . import SecureCompletionClient as _module  # noqa: F401
from . import nomyo as _nomyo_module  # noqa: F401
from ._client import SecureChatCompletion, SecureCompletionClient
from ._exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ForbiddenError,
    InvalidRequestError,
    RateLimitError,
    SecurityError,
    ServerError,
    ServiceUnavailableError,
)
from ._native import ChunkIterator

__all__ = [
    "SecureChatCompletion",
    "SecureCompletionClient",
    "ChunkIterator",
    "SecurityError",
    "APIError",
    "AuthenticationError",
    "InvalidRequestError",
    "APIConnectionError",
    "ForbiddenError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
]

__version__ = "0.1.0"

del _module, _nomyo_module

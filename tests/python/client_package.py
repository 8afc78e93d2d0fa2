"""The client package the interoperability tests drive: the reference
client `nomyo` 0.2.9 by default, or its drop-in replacement `nomyo_rs`
(python/, the Rust client) with NOMYO_CLIENT_PACKAGE=nomyo_rs. .ci/run runs
the tests that import from here once with each.

With nomyo_rs, two settings keep the comparison like for like:

- protocol v1 unless a test asks for another: these tests are about the
  v1 wire `nomyo` speaks (nomyo_rs's default, "auto", would pick v2 against
  `nomyo serve`; tests/python/test_py_binding_*.py cover v2);
- a known-servers file of its own for every client object: the tests start
  many servers with fresh keys on reused ports, and `nomyo` trusts whatever
  key it fetches, so one shared record would refuse a later server as a
  changed key (nomyo_rs's protection, not what these tests are about).
"""

import importlib
import os
import tempfile

NAME = os.environ.get("NOMYO_CLIENT_PACKAGE", "nomyo")
if NAME not in ("nomyo", "nomyo_rs"):
    raise RuntimeError(f"NOMYO_CLIENT_PACKAGE must be nomyo or nomyo_rs, not {NAME!r}")
IS_RUST = NAME == "nomyo_rs"
_pkg = importlib.import_module(NAME)

APIConnectionError = _pkg.APIConnectionError
APIError = _pkg.APIError
AuthenticationError = _pkg.AuthenticationError
ForbiddenError = _pkg.ForbiddenError
InvalidRequestError = _pkg.InvalidRequestError
RateLimitError = _pkg.RateLimitError
SecurityError = _pkg.SecurityError
ServerError = _pkg.ServerError
ServiceUnavailableError = _pkg.ServiceUnavailableError

if IS_RUST:
    _records = tempfile.TemporaryDirectory(prefix="nomyo-rs-known-")

    class SecureChatCompletion(_pkg.SecureChatCompletion):
        """nomyo_rs's SecureChatCompletion over v1, with a known-servers
        file of its own (see the module's docstring)."""

        _count = 0

        def __init__(self, *args, **kw):
            SecureChatCompletion._count += 1
            kw.setdefault("protocol", "v1")
            kw.setdefault("known_servers", os.path.join(_records.name, f"known-{SecureChatCompletion._count}"))
            super().__init__(*args, **kw)

else:
    SecureChatCompletion = _pkg.SecureChatCompletion

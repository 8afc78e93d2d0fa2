"""The drop-in interface of the Python package nomyo_rs against the reference
client `nomyo` 0.2.9: signatures and defaults as `nomyo`'s, at the same
import paths, and the exception classes (names, bases, status codes).

Skipped when nomyo_rs is not installed, unless NOMYO_REQUIRE_PY_BINDING=1.
"""

import inspect

import nomyo
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*HTTP instead of HTTPS:UserWarning")

EXCEPTIONS = {
    "APIError": 0,
    "AuthenticationError": 401,
    "InvalidRequestError": 400,
    "ForbiddenError": 403,
    "RateLimitError": 429,
    "ServerError": 500,
    "ServiceUnavailableError": 503,
    "APIConnectionError": None,
    "SecurityError": None,
}


@pytest.mark.parametrize(
    "module,path",
    [
        ("", "SecureChatCompletion.__init__"),
        ("", "SecureChatCompletion.create"),
        ("", "SecureChatCompletion.acreate"),
        (".nomyo", "SecureChatCompletion.create"),
        (".SecureCompletionClient", "SecureCompletionClient.__init__"),
        (".SecureCompletionClient", "SecureCompletionClient.generate_keys"),
        (".SecureCompletionClient", "SecureCompletionClient.load_keys"),
    ],
)
def test_signatures_start_with_nomyos(nomyo_rs, module, path):
    """Every parameter of nomyo's, in the same order with the same default,
    at the same import path; what nomyo_rs adds is keyword-only."""
    import importlib

    def sig(package):
        obj = importlib.import_module(package + module)
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj, inspect.signature(obj)

    (_, ref), (fn, ours) = sig("nomyo"), sig("nomyo_rs")
    ref_params = list(ref.parameters.values())
    our_params = list(ours.parameters.values())
    assert [(p.name, p.default, p.kind) for p in our_params[: len(ref_params)]] == [
        (p.name, p.default, p.kind) for p in ref_params
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in our_params[len(ref_params) :])
    if path.endswith("create"):
        assert inspect.iscoroutinefunction(fn)
    # `from nomyo_rs import SecureCompletionClient` is the class.
    assert nomyo_rs.SecureCompletionClient is importlib.import_module("nomyo_rs.SecureCompletionClient").SecureCompletionClient


def test_exception_classes_match_nomyos(nomyo_rs):
    import nomyo.SecureCompletionClient as ref_module

    for name, status in EXCEPTIONS.items():
        ours, ref = getattr(nomyo_rs, name), getattr(nomyo, name)
        assert ours.__name__ == ref.__name__
        assert [b.__name__ for b in ours.__mro__] == [b.__name__ for b in ref.__mro__], name
        if status is not None:
            e, r = ours("m"), ref("m")
            assert e.status_code == r.status_code == (status or None)
            assert str(e) == str(r) == "m" and e.message == "m" and e.error_details is None
    assert set(nomyo.__all__) - set(dir(nomyo_rs)) <= {
        "get_memory_protection_info",
        "disable_secure_memory",
        "enable_secure_memory",
        "secure_bytearray",
        "secure_bytes",
        "SecureBuffer",
    }
    assert ref_module.APIError is nomyo.APIError

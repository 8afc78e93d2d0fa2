"""`nomyo.SecureCompletionClient`'s names: the client class and the
exception classes."""

from ._client import SecureCompletionClient
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

__all__ = [
    "SecureCompletionClient",
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

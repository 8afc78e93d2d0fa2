"""The exception classes of `nomyo` 0.2.9, with the same names, bases,
constructor arguments and default status codes, so that code written for
`nomyo` catches the same errors."""

from typing import Any, Dict, Optional


class SecurityError(Exception):
    """A security check failed: a pinned or recorded server key does not
    match, the protocol was downgraded, the server is not attested, an
    answer failed to decrypt, or plain HTTP was refused. Nothing was sent,
    or nothing of the answer is returned."""


class APIError(Exception):
    """Base class for the errors a server answered with."""

    def __init__(self, message: str, status_code: Optional[int] = None, error_details: Optional[Dict[str, Any]] = None):
        self.message = message
        self.status_code = status_code
        self.error_details = error_details
        super().__init__(message)

    def __str__(self):
        return self.message


class AuthenticationError(APIError):
    """HTTP 401: a missing or wrong API key."""

    def __init__(self, message: str, status_code: int = 401, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)


class InvalidRequestError(APIError):
    """HTTP 400: the server refused the request."""

    def __init__(self, message: str, status_code: int = 400, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)


class APIConnectionError(Exception):
    """The server could not be reached (after the retries), or did not
    answer in time."""


class RateLimitError(APIError):
    """HTTP 429 (after the retries)."""

    def __init__(self, message: str, status_code: int = 429, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)


class ForbiddenError(APIError):
    """HTTP 403, e.g. the model is not allowed at the requested security tier."""

    def __init__(self, message: str, status_code: int = 403, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)


class ServerError(APIError):
    """HTTP 500 (after the retries)."""

    def __init__(self, message: str, status_code: int = 500, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)


class ServiceUnavailableError(APIError):
    """HTTP 503 (after the retries): the inference backend is unavailable."""

    def __init__(self, message: str, status_code: int = 503, error_details: Optional[Dict[str, Any]] = None):
        super().__init__(message, status_code, error_details)

"""The two ways a request fails: the client sent something wrong (4xx), or the model failed (5xx).

Protocol adapters turn both into their own wire form (an HTTP status with a JSON body, an openpi text
frame, a vla-eval ERROR message); the message always says what was wrong and what is valid.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A malformed request. `status` is the HTTP status the REST protocol answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status

    @property
    def message(self) -> str:
        return str(self)


class ModelFailure(RuntimeError):
    """The model raised while answering a well-formed request (HTTP 500; the server keeps serving)."""

    status = 500


class ServerClosing(RuntimeError):
    """The server is shutting down and will not answer this request (HTTP 503)."""

    status = 503

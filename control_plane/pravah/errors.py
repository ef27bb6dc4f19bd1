"""The control plane's one exception hierarchy.

Why: the service layer (jobs, runner, engine client) raises these without
knowing who called it. The REST API maps them to HTTP codes in one place
(`pravah.api.app`), the CLI maps them to exit codes and messages; nothing
below the edges picks a status code. Every message is a sentence meant for a
human: it names the thing that went wrong and, where one exists, the fix.
"""

from __future__ import annotations


class PravahError(Exception):
    """Base class of every error Pravah raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFoundError(PravahError):
    """A job, source or other named thing does not exist."""


class InvalidRequestError(PravahError):
    """The caller asked for something invalid (unknown task, bad option, bad source).

    `field` names the request field at fault in dotted form ("source",
    "options.delimiter") when one is known, so a form can show the message
    next to that field.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(PravahError):
    """The request is valid but not in the thing's current state (cancel a finished job)."""


class GoneError(PravahError):
    """The thing existed but was removed on purpose (results past their retention)."""


class ConfigurationError(PravahError):
    """A setting names something unusable, such as a state folder that cannot be made."""


class StoreUnavailableError(PravahError):
    """The job store's database could not be reached or opened."""


class EngineUnavailableError(PravahError):
    """No engine answered: not started, crashed, or unreachable."""


class EngineError(PravahError):
    """An engine answered with an unexpected failure (internal error, protocol violation)."""


class EngineBinaryNotFoundError(PravahError):
    """The `pravah-engine` executable could not be found; the message lists every path tried."""


class PayloadTooLargeError(PravahError):
    """An upload is larger than the configured limit."""


class JobCancelledError(PravahError):
    """A job was cancelled while it ran."""


class AuthenticationError(PravahError):
    """No API key, or one that is unknown, revoked or expired (HTTP 401)."""


class PermissionDeniedError(PravahError):
    """The caller is known but its role may not do this (HTTP 403)."""

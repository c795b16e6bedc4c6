"""One exception family for everything a user may see.

    DropflowError                 title + hint + kind; what the CLI and the TUI render
     ├── ConfigError              config.yaml / dropflow.yaml invalid (file, key path, line)
     ├── InputError               the dropped file itself is unusable: fail, keep the file
     ├── ModelMissingError        weights or an optional library are absent: fail, say how to get them
     └── ProviderError            a remote (or offline) model call failed
          ├── RetryableError      429, 5xx, timeouts, dropped connections: back off and retry
          └── PermanentError      400 bad input, moderation, arrears: fail at once with the code
               └── AuthError      401 (or an invalid-key code): the key is wrong or missing

The scheduler acts on `kind` only; engines and providers raise the most specific class and
wrap third-party exceptions at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# exit codes of the CLI (the daemon's and every engine's extension), one per outcome
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG, EXIT_MISSING, EXIT_STATE = 0, 1, 2, 3, 4, 5


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    INPUT = "input"
    MODEL_MISSING = "model_missing"
    CONFIG = "config"
    CANCELLED = "cancelled"


class DropflowError(Exception):
    """Base of every error dropflow shows a user: a message, a short title and a fix hint."""

    kind: ErrorKind = ErrorKind.PERMANENT
    title: str = "error"
    # what the job spent before it failed (engine-defined, as in `Done.usage`); the scheduler
    # records it with the failure, so paid calls of a failed job still show up
    usage: dict[str, Any] | None = None

    def __init__(self, message: str, *, hint: str = "", title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title

    def payload(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "message": self.message, "hint": self.hint}


class ConfigError(DropflowError):
    kind = ErrorKind.CONFIG
    title = "configuration error"


class InputError(DropflowError):
    kind = ErrorKind.INPUT
    title = "input error"


class ModelMissingError(DropflowError):
    kind = ErrorKind.MODEL_MISSING
    title = "model missing"


class ProviderError(DropflowError):
    """A model call failed. `code` is the provider's own error code, `status` the HTTP status."""

    title = "provider error"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        provider: str = "",
        code: str = "",
        status: int | None = None,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        out = super().payload()
        out.update(provider=self.provider, code=self.code, status=self.status, request_id=self.request_id)
        return out


class RetryableError(ProviderError):
    kind = ErrorKind.RETRYABLE
    title = "temporary provider error"


class PermanentError(ProviderError):
    kind = ErrorKind.PERMANENT
    title = "provider refused the request"


class AuthError(PermanentError):
    title = "authentication failed"


class JobCancelled(DropflowError):
    """Raised inside an engine when the user cancelled (or paused) its job."""

    kind = ErrorKind.CANCELLED
    title = "cancelled"


def render(exc: BaseException) -> str:
    """One human-readable block for the CLI, logs and the TUI."""
    if isinstance(exc, DropflowError):
        text = f"{exc.title}: {exc.message}"
        if exc.hint:
            text += f"\n  hint: {exc.hint}"
        return text
    return f"unexpected error: {type(exc).__name__}: {exc}"


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The {kind, message, hint} record stored with a failed job."""
    if isinstance(exc, DropflowError):
        return exc.payload()
    return {
        "kind": str(ErrorKind.PERMANENT),
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "this is a bug in dropflow or an engine; the log has the traceback",
    }

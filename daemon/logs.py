"""Logging for the daemon: stderr plus a rotating file, with every known secret redacted.

Redaction is a filter on the handlers, so it also covers third-party loggers (dashscope logs
request details at DEBUG) and tracebacks.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REDACTED = "***"


class Redactor:
    """Replaces known secret values in text; shared by the log filter and the error store."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def payload(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: self(v) if isinstance(v, str) else v for k, v in data.items()}


class RedactingFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redact.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def setup(
    level: str, log_dir: Path | None, redact: Redactor, *, max_bytes: int = 5_000_000, backups: int = 5
) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_dropflow", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "dropflow.log"
        old = os.umask(0o077)
        try:
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
                )
            )
        finally:
            os.umask(old)
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RedactingFilter(redact))
        h._dropflow = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    # third-party chatter that would drown the daemon's own lines
    for noisy in ("httpx", "httpcore", "watchfiles", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

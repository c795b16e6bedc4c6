"""Enqueue a file or folder from the browser exactly as `dropflow submit PATH --engine E` does.

The submit logic (route choice, per-unit jobs, params validation, dedupe) lives in
`dropflow.daemon.cli.submit.cmd_submit`; this calls it rather than copying it, and collects the lines it
prints. Blocking (it runs its own event loop for the store): call it from a thread worker.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path


def submit(config: Path, path: Path, engine: str | None) -> list[str]:
    """Queue `path` with `engine` (None: by route / file type). Returns `dropflow submit`'s lines.

    Raises: DropflowError (InputError: nothing to take; ConfigError: unknown engine or bad
    params) with a message and a fix hint, as the CLI would print them.
    """
    from dropflow.daemon import cli

    args = argparse.Namespace(
        config=str(config), path=str(path), engine=engine, set=[], priority=None, force=False
    )
    out = io.StringIO()
    # the CLI prints its outcome; redirect_stdout swaps sys.stdout process-wide for the call,
    # which inside the TUI only diverts Textual's own print capture for these few milliseconds
    with contextlib.redirect_stdout(out):
        cli.cmd_submit(args)
    return [line for line in out.getvalue().splitlines() if line.strip()]

"""The `dropflow` command line: the parser and `main`; the commands live beside it by concern.

`setup` (init, daemon, config), `jobs` (jobs, job, edits, pause / resume, priority),
`submit` (submit); commands of the TUI and the engines come from `COMMAND_MODULES`. The names
other modules use (`load_config`, `cmd_*`, the exit codes) stay importable from here.

Exit codes: 0 ok, 1 runtime error, 2 usage, 3 configuration error, 4 no such job,
5 the request does not apply to the job's state (e.g. retry of a running job).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from dropflow.daemon import __version__
from dropflow.daemon.cli.jobs import cmd_edit, cmd_job, cmd_jobs, cmd_pause_resume, cmd_priority
from dropflow.daemon.cli.setup import cmd_config, cmd_daemon, cmd_init, load_config
from dropflow.daemon.cli.submit import cmd_submit
from dropflow.daemon.core.jobs import STATUSES, StoreUnavailable
from dropflow.engine.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_STATE,
    EXIT_USAGE,
    ConfigError,
    DropflowError,
    render,
)

__all__ = [
    "COMMAND_MODULES",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_MISSING",
    "EXIT_OK",
    "EXIT_STATE",
    "EXIT_USAGE",
    "build_parser",
    "cmd_config",
    "cmd_daemon",
    "cmd_edit",
    "cmd_init",
    "cmd_job",
    "cmd_jobs",
    "cmd_pause_resume",
    "cmd_priority",
    "cmd_submit",
    "load_config",
    "main",
]

# Commands that belong to one part (the TUI, an engine) live beside it. Each module has
# `add_commands(subparsers)` and must import only light things at module level.
COMMAND_MODULES = ("dropflow.tui.commands", "dropflow.engine.dataset.cli", "dropflow.engine.cluster.cli")


# --- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dropflow",
        description="A drop-folder workbench for multimodal AI data: drop files into inbox folders, "
        "get annotations, datasets, videos and face clusters in outputs/.",
    )
    p.add_argument("--version", action="version", version=f"dropflow {__version__}")
    p.add_argument("--config", help="config file (default: $DROPFLOW_CONFIG or ./config.yaml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("init", help="create config.yaml, inbox/, outputs/ and prompts/ in DIR")
    s.add_argument("dir", nargs="?", default=".")
    s.add_argument("--force", action="store_true", help="overwrite an existing config.yaml")
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("daemon", help="run the daemon headless in the foreground (logs to stderr and a file)")
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument(
        "--engines",
        metavar="NAME[,NAME]",
        help="run only these engines' jobs (e.g. cluster on a GPU box); other daemons on a shared "
        "store run the rest",
    )
    s.add_argument(
        "--routes",
        metavar="NAME[,NAME]",
        help="serve only these routes: take new files from their folders and run their jobs",
    )
    s.add_argument(
        "--no-watch",
        dest="watch",
        action="store_false",
        help="a pure worker: do not watch the inbox, only run queued jobs",
    )
    s.set_defaults(fn=cmd_daemon)

    s = sub.add_parser("jobs", help="list jobs")
    s.add_argument("--status", choices=STATUSES)
    s.add_argument("--engine")
    s.add_argument("--limit", type=int, default=200, help="newest N jobs (default 200)")
    s.add_argument("--json", action="store_true", help="a JSON array, stable for scripts")
    s.set_defaults(fn=cmd_jobs)

    s = sub.add_parser("job", help="one job in detail, with its events")
    s.add_argument("id", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_job)

    s = sub.add_parser("submit", help="enqueue a file or folder in place (no need to move it to the inbox)")
    s.add_argument("path")
    s.add_argument("--engine", help="engine to use (default: by route / file type)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="engine parameter")
    s.add_argument("--priority", type=int)
    s.add_argument("--force", action="store_true", help="run even if this content was processed before")
    s.set_defaults(fn=cmd_submit)

    for name, help_ in (
        ("retry", "queue a failed or cancelled job again"),
        ("cancel", "cancel a job"),
        ("remove", "delete a job's record (not its files)"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("id", type=int)
        s.set_defaults(fn=lambda a, action=name: cmd_edit(a, action))

    for name, pause in (("pause", True), ("resume", False)):
        s = sub.add_parser(name, help=f"{name} a job, an engine or everything")
        s.add_argument("id", type=int, nargs="?")
        s.add_argument("--engine")
        s.add_argument("--all", action="store_true")
        s.set_defaults(fn=lambda a, pause=pause: cmd_pause_resume(a, pause))

    s = sub.add_parser("priority", help="set a job's priority (higher runs first)")
    s.add_argument("id", type=int)
    s.add_argument("priority", type=int)
    s.set_defaults(fn=cmd_priority)

    s = sub.add_parser("config", help="check or show the configuration")
    s.add_argument("action", choices=["check", "show"])
    s.set_defaults(fn=cmd_config)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    _config_anywhere(p)
    return p


def _config_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept `--config` after the subcommand too (`dropflow daemon --config X`, as users type it):
    every subcommand, nested ones included, takes it; given nowhere, the top-level default stands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--config" in a.option_strings for a in child._actions):
                    child.add_argument(
                        "--config", default=argparse.SUPPRESS, help="config file (as before the command)"
                    )
                _config_anywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(render(exc), file=sys.stderr)
        return EXIT_CONFIG
    except DropflowError as exc:
        print(render(exc), file=sys.stderr)
        return EXIT_ERROR
    except StoreUnavailable as exc:  # a PostgreSQL store out of reach: its message names it, redacted
        print(f"dropflow: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `dropflow jobs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK

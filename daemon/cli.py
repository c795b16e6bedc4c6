"""The `dropflow` command line.

Exit codes: 0 ok, 1 runtime error, 2 usage, 3 configuration error, 4 no such job,
5 the request does not apply to the job's state (e.g. retry of a running job).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dropflow.daemon import __version__
from dropflow.daemon.core.config import Config, find_config, load, redacted_dump
from dropflow.daemon.core.jobs import STATUSES, Job, NewJob
from dropflow.daemon.core.store import Store, with_store
from dropflow.engine.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_STATE,
    EXIT_USAGE,
    ConfigError,
    DropflowError,
    InputError,
    render,
)

T = TypeVar("T")

# Commands that belong to one part (the TUI, an engine) live beside it. Each module has
# `add_commands(subparsers)` and must import only light things at module level.
COMMAND_MODULES = ("dropflow.tui.commands", "dropflow.engine.dataset.cli", "dropflow.engine.cluster.cli")


def load_config(args: argparse.Namespace) -> Config:
    """The config named by --config / $DROPFLOW_CONFIG / ./config.yaml."""
    return load(find_config(args.config))


# --- init ------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    tpl = resources.files("dropflow.daemon") / "templates"
    target = root / "config.yaml"
    if target.exists() and not args.force:
        print(f"{target} exists; kept it (use --force to overwrite)")
    else:
        target.write_text((tpl / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {target}")
    for sub in ("prompts", "inbox"):
        _copy_tree(tpl / sub, root / sub)
    for name in ("outputs", "archive"):
        (root / name).mkdir(exist_ok=True)
    for engine in ("annotate", "dataset", "video-gen", "cluster"):
        (root / "inbox" / engine).mkdir(parents=True, exist_ok=True)
        (root / "outputs" / engine).mkdir(parents=True, exist_ok=True)
    print(f"ready: drop files into {root / 'inbox'}/<engine>/ and run `dropflow --config {target} daemon`")
    return EXIT_OK


def _copy_tree(src: Any, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name.startswith((".", "__")):
            continue
        out = dst / item.name
        if item.is_dir():
            _copy_tree(item, out)
        elif not out.exists():
            out.write_bytes(item.read_bytes())


# --- daemon ----------------------------------------------------------------------------------------


def cmd_daemon(args: argparse.Namespace) -> int:
    from dropflow.daemon import logs
    from dropflow.daemon.daemon import Daemon

    cfg = load_config(args)
    redact = logs.Redactor(cfg.secrets())
    logs.setup(
        args.log_level or cfg.logging.level,
        cfg.paths.logs,
        redact,
        max_bytes=cfg.logging.max_bytes,
        backups=cfg.logging.backups,
    )
    try:
        asyncio.run(Daemon(cfg, redact).run())
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        return 130
    return EXIT_OK


# --- jobs ------------------------------------------------------------------------------------------


def _age(ts: float) -> str:
    s = max(0, int(time.time() - ts))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def _short(path: str, width: int = 48) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def cmd_jobs(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    jobs = with_store(
        cfg,
        lambda s: s.list(status=args.status, engine=args.engine, limit=args.limit, newest_first=True),
    )
    jobs.reverse()
    if args.json:
        print(json.dumps([j.as_dict() for j in jobs], ensure_ascii=False, indent=1))
        return EXIT_OK
    if not jobs:
        print("no jobs")
        return EXIT_OK
    print(f"{'ID':>6}  {'ENGINE':<9} {'STATUS':<9} {'PROG':>5} {'TRY':>4} {'AGE':>4}  INPUT / MESSAGE")
    for j in jobs:
        msg = (
            j.error_message.splitlines()[0]
            if j.status == "failed" and j.error_message
            else j.progress_message
        )
        print(
            f"{j.id:>6}  {j.engine:<9} {j.status:<9} {int(j.progress * 100):>4}% {j.attempts:>2}/{j.max_attempts:<1}"
            f" {_age(j.created_at):>4}  {_short(j.input_path)}" + (f"  — {msg}" if msg else "")
        )
    return EXIT_OK


def cmd_job(args: argparse.Namespace) -> int:
    cfg = load_config(args)

    async def get(store: Store) -> tuple[Job | None, list[Any]]:
        return await store.get(args.id), await store.events(args.id)

    job, events = with_store(cfg, get)
    if job is None:
        print(f"no job {args.id}", file=sys.stderr)
        return EXIT_MISSING
    if args.json:
        data = job.as_dict()
        data["events"] = [{"at": e.at, "kind": e.kind, "message": e.message} for e in events]
        print(json.dumps(data, ensure_ascii=False, indent=1))
        return EXIT_OK
    print(f"job {job.id}  {job.engine}  {job.status}  ({int(job.progress * 100)}% {job.progress_message})")
    print(
        f"  input:    {job.input_path}"
        + (f"  (+{len(job.input_paths) - 1} more)" if len(job.input_paths) > 1 else "")
    )
    if job.archived_path:
        print(f"  archived: {job.archived_path}")
    print(
        f"  route:    {job.route}"
        + (f"  batch {job.batch}" if job.batch else "")
        + f"  provider {job.provider or 'default'}"
    )
    print(f"  attempts: {job.attempts}/{job.max_attempts}  priority {job.priority}")
    if job.params:
        print(f"  params:   {json.dumps(job.params, ensure_ascii=False)}")
    if job.remote_task_id:
        print(f"  remote:   {job.remote_task_id}")
    if job.usage:
        print(f"  usage:    {json.dumps(job.usage)}")
    for o in job.outputs:
        print(f"  output:   {o}")
    if job.error:
        print(f"  error:    [{job.error['kind']}] {job.error['message']}")
        if job.error["hint"]:
            print(f"  fix:      {job.error['hint']}")
    if events:
        print("  events:")
        for e in events:
            print(f"    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.at))}  {e.kind:<7} {e.message}")
    return EXIT_OK


# --- edits -----------------------------------------------------------------------------------------

_OUTCOME_EXIT = {"missing": EXIT_MISSING, "noop": EXIT_STATE, "running": EXIT_STATE}


def _edit(args: argparse.Namespace, action: str) -> int:
    cfg = load_config(args)

    async def go(store: Store) -> str:
        fn = getattr(store, action)
        return await fn(args.id)

    outcome = with_store(cfg, go)
    words = {
        "missing": f"no job {args.id}",
        "noop": f"job {args.id}: nothing to {action} in its current state",
        "running": f"job {args.id} is running: cancel it first",
        "requested": f"job {args.id}: {action} requested; the daemon applies it within a second",
    }
    print(words.get(outcome, f"job {args.id}: {outcome}"))
    return _OUTCOME_EXIT.get(outcome, EXIT_OK)


def cmd_pause_resume(args: argparse.Namespace, pause: bool) -> int:
    verb = "pause" if pause else "resume"
    if args.id is not None:
        return _edit(args, verb)
    if not args.engine and not args.all:
        print(f"say what to {verb}: a job ID, --engine NAME or --all", file=sys.stderr)
        return EXIT_USAGE
    cfg = load_config(args)
    with_store(cfg, lambda s: s.pause_engine(None if args.all else args.engine, pause))
    print(f"{verb}d {'all engines' if args.all else 'engine ' + args.engine}")
    return EXIT_OK


def cmd_priority(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    outcome = with_store(cfg, lambda s: s.set_priority(args.id, args.priority))
    if outcome == "missing":
        print(f"no job {args.id}", file=sys.stderr)
        return EXIT_MISSING
    print(f"job {args.id}: priority {args.priority}")
    return EXIT_OK


# --- submit ----------------------------------------------------------------------------------------


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r} is not key=value", hint="e.g. --set fps=2.0")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def cmd_submit(args: argparse.Namespace) -> int:
    from dropflow.daemon.daemon import load_plugins
    from dropflow.daemon.router import Router
    from dropflow.engine import files

    cfg = load_config(args)
    load_plugins(cfg)
    router = Router(cfg)
    path = Path(args.path).expanduser().resolve()
    if not path.exists():
        raise InputError(f"{path} does not exist", hint="check the path")
    route = None
    if args.engine:
        route = next((r for r in cfg.routes if r.engine == args.engine), None)
        if route is None:
            from dropflow.daemon.core.config import Route

            router.engine(args.engine)  # unknown engine -> ConfigError with the known names
            route = Route(name=f"submit:{args.engine}", folder="submit", engine=args.engine)
    else:
        found = router.unit_root(path)
        if found is not None:
            route = found[0]
        else:
            for r in cfg.routes:
                eng = router.engine(r.engine)
                if (path.is_dir() and eng.unit == "folder") or (path.is_file() and eng.inputs_for(path)):
                    route = r
                    break
    if route is None:
        raise InputError(
            f"no route takes {path}",
            hint="name an engine with --engine (annotate, dataset, video-gen, cluster)",
        )
    eng = router.engine(route.engine)
    params = router.validate_params(route, {**route.params, **_parse_sets(args.set)}, [])
    units: list[tuple[Path, list[Path], str]] = []
    if path.is_dir() and eng.unit == "file":
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            inputs = eng.inputs_for(f)
            if inputs is not None and not f.name.startswith("."):
                units.append((f, inputs, path.name))
    else:
        inputs = [path] if path.is_dir() else eng.inputs_for(path)
        if inputs is None:
            raise InputError(
                f"engine {route.engine!r} does not take {path.name}", hint="choose another --engine"
            )
        units.append((path, inputs, path.name if eng.unit == "folder" else ""))
    if not units:
        raise InputError(f"nothing in {path} that engine {route.engine!r} takes", hint="check the file types")
    new = [
        NewJob(
            engine=route.engine,
            route=route.name,
            input_path=str(unit),
            input_paths=[str(p) for p in inputs],
            content_hash=files.content_hash(unit),
            batch=batch,
            source="submit",
            provider=route.provider,
            params=params,
            priority=args.priority if args.priority is not None else route.priority,
            max_attempts=route.max_attempts or cfg.scheduler.max_attempts,
            forced=args.force,
        )
        for unit, inputs, batch in units
    ]
    results = with_store(cfg, lambda s: s.insert_jobs(new))
    for nj, res in zip(new, results, strict=True):
        if res.created:
            print(f"job {res.job_id}: queued {nj.input_path} ({route.engine})")
        else:
            print(
                f"job {res.job_id}: already has this content ({nj.input_path}); use --force to run it again"
            )
    return EXIT_OK


# --- config ----------------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    from dropflow.daemon.daemon import load_plugins
    from dropflow.daemon.router import Router
    from dropflow.daemon.watcher import Watcher

    cfg = load_config(args)
    if args.action == "show":
        print(f"# {cfg.source}\n" + redacted_dump(cfg), end="")
        return EXIT_OK
    load_plugins(cfg)
    router = Router(cfg)
    print(f"config OK: {cfg.source}")
    from dropflow.engine.providers import resolve_default

    default, note = resolve_default(cfg.providers)
    print(f"default provider: {default}" + (f"  ({note})" if note else ""))
    print("\nroutes (first match wins):")
    rows = router.table()
    cols = ["route", "folder", "glob", "engine", "unit", "accepts", "provider"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols} if rows else {}
    print("  " + "  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  " + "  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    problems = 0
    for r in cfg.routes:
        try:
            router.validate_params(r, r.params, [])
        except ConfigError as exc:
            problems += 1
            print(f"\n{render(exc)}")
    watcher = Watcher(cfg.watch, router, _no_ready)
    watcher.scan()
    print(f"\ninbox now ({cfg.paths.inbox}):")
    if not watcher.gate.pending:
        print("  (nothing to route)")
    for unit, pending in sorted(watcher.gate.pending.items()):
        plan = router.plan(pending.route, unit)
        if plan is None:
            continue
        where = f"-> {plan.route.name} ({plan.engine})" + (f" batch {plan.batch}" if plan.batch else "")
        if plan.error:
            problems += 1
            where += f"  INVALID: {plan.error.message}"
        print(f"  {unit.relative_to(cfg.paths.inbox)}  {where}")
    return EXIT_CONFIG if problems else EXIT_OK


async def _no_ready(_ready: object) -> None:  # pragma: no cover - config check never settles
    return None


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
        s.set_defaults(fn=lambda a, action=name: _edit(a, action))

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
    return p


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
    except BrokenPipeError:  # `dropflow jobs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

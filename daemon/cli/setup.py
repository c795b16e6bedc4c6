"""`dropflow init`, `dropflow daemon` and `dropflow config`: making, running and checking a setup.

Also `load_config`, which every command uses to find its config file.
"""

from __future__ import annotations

import argparse
import asyncio
from importlib import resources
from pathlib import Path
from typing import Any

from dropflow.daemon.core.config import Config, find_config, load, redacted_dump
from dropflow.engine.errors import EXIT_CONFIG, EXIT_OK, ConfigError, render


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
        # `up` without a terminal comes here too, with no role flags: the whole daemon
        engines, routes = (_names(getattr(args, flag, None)) for flag in ("engines", "routes"))
        daemon = Daemon(cfg, redact, engines=engines, routes=routes, watch=getattr(args, "watch", True))
        asyncio.run(daemon.run())
    except KeyboardInterrupt:  # a second Ctrl-C before the handlers were installed
        return 130
    return EXIT_OK


def _names(flag: str | None) -> list[str] | None:
    """`--engines a,b` / `--routes a,b` as a list; None when not given."""
    return [n.strip() for n in flag.split(",") if n.strip()] if flag else None


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
    for route in cfg.routes:
        try:
            router.validate_params(route, route.params, [])
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

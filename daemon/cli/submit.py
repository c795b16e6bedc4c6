"""`dropflow submit PATH`: enqueue a file or folder in place, by `--engine` or by route and file type.

`dropflow.tui.enqueue` calls `cmd_submit` too, so the browser queues exactly what the command does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dropflow.daemon.cli.setup import load_config
from dropflow.daemon.core.jobs import NewJob
from dropflow.daemon.core.store import with_store
from dropflow.engine.errors import EXIT_OK, EXIT_STATE, ConfigError, InputError


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
    # not resolved: a link is judged by where it really leads, below
    path = Path(args.path).expanduser().absolute()
    if not path.exists():
        raise InputError(f"{path} does not exist", hint="check the path")
    # what may be read: the submitted folder (or the submitted file's folder), and the inbox
    roots = (path if path.is_dir() else path.parent, cfg.paths.inbox)
    files.check_inside(path, *roots, what="submit")
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
    sets = _parse_sets(args.set)
    params = router.validate_params(route, {**route.params, **sets}, [], command_line=sets)
    units: list[tuple[Path, list[Path], str]] = []
    if path.is_dir() and eng.unit == "file":
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            inputs = eng.inputs_for(f)
            if inputs is not None and not f.name.startswith("."):
                for p in inputs:
                    files.check_inside(p, *roots, what="submit")
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
            # as intake hashes a drop: the same unit is one job whichever way it came
            content_hash=files.unit_hash(inputs),
            batch=batch,
            source="submit",
            provider=route.provider or router.default_provider(),
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
                f"job {res.job_id}: already has this content with these params ({nj.input_path});"
                " use --force to run it again"
            )
    # nothing queued: a true duplicate is not success (different params would have been new work)
    return EXIT_OK if any(r.created for r in results) else EXIT_STATE

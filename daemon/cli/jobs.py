"""`dropflow jobs`, `job`, `retry` / `cancel` / `remove`, `pause` / `resume` and `priority`.

Reading the job store and asking for changes to it; the daemon applies the changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dropflow.daemon.cli.setup import load_config
from dropflow.daemon.core.jobs import Job
from dropflow.daemon.core.store import Store, with_store
from dropflow.engine.errors import EXIT_MISSING, EXIT_OK, EXIT_STATE, EXIT_USAGE

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
    for line in _annotate_lines(job.usage):
        print(line)
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


def _annotate_lines(usage: dict[str, Any]) -> list[str]:
    """Model, frames, time and spend of an annotate job, the same way for every mode (local
    single / two-stage, hosted bailian): the keys the engine puts in its usage."""
    if not usage or "frames_sent" not in usage or "model" not in usage:
        return []
    model = f"{usage['model']} ({usage.get('mode', 'single')}"
    model += f"; summary {usage['summary_model']})" if usage.get("summary_model") else ")"
    spend = (
        f"{usage.get('input_tokens', 0):,} input + {usage.get('output_tokens', 0):,} output tokens"
        f" ({usage.get('image_tokens', 0):,} image, {usage.get('video_tokens', 0):,} video)"
    )
    if usage.get("audio_seconds"):
        spend += f", {usage['audio_seconds']} s of audio"
    spend += f", {usage.get('requests', 0)} paid request(s)"
    if usage.get("cached_answers"):
        spend += f", {usage['cached_answers']} cached"
    return [
        f"  model:    {model}",
        f"  frames:   {usage['frames_sent']} sent of {usage.get('frames_sampled', usage['frames_sent'])} sampled",
        f"  time:     {float(usage.get('processing_seconds', 0)):.1f} s",
        f"  spend:    {spend}",
    ]


# --- edits -----------------------------------------------------------------------------------------

_OUTCOME_EXIT = {"missing": EXIT_MISSING, "noop": EXIT_STATE, "running": EXIT_STATE}


def cmd_edit(args: argparse.Namespace, action: str) -> int:
    """`retry`, `cancel`, `remove`, and `pause` / `resume` of one job: `action` is the Store method."""
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
        return cmd_edit(args, verb)
    if not args.engine and not args.all:
        print(f"say what to {verb}: a job ID, --engine NAME or --all", file=sys.stderr)
        return EXIT_USAGE
    cfg = load_config(args)
    if args.engine and not args.all:
        from dropflow.daemon.daemon import load_plugins
        from dropflow.engine import registry

        load_plugins(cfg)
        if args.engine not in registry.names():
            print(
                f"unknown engine {args.engine!r}; known engines: {', '.join(registry.names())}",
                file=sys.stderr,
            )
            return EXIT_USAGE
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

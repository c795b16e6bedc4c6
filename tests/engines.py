"""A trivial engine for tests of the spine (not one of the four): it records every run.

Each run appends `start` and `done` lines to `<state>/record-runs.jsonl` and writes one output
atomically, so tests can count runs and completions across daemon restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import ClassVar

from dropflow.daemon.core.jobs import Job
from dropflow.engine import files
from dropflow.engine.base import Done, FileEngine, JobContext, Params, Wait
from dropflow.engine.errors import InputError, PermanentError, RetryableError
from dropflow.engine.providers.base import TextPart, VisionRequest


class RecordParams(Params):
    seconds: float = 0.0  # how long a run takes (in steps, checking for cancel)
    fail: str | None = None  # retryable | permanent | input
    fail_times: int = 1  # how many attempts fail before one succeeds (retryable)
    retry_after: float | None = None
    wait_once: float | None = None  # return Wait(seconds) on the first run (like a remote task)
    note: str = ""
    ask: bool = False  # ask the route's vision provider about the file (provider error paths)
    consume: bool = False  # folder-record: remove half its files, wait, the rest, wait again
    keep_input: bool = False  # Done(archive_input=False): the engine leaves its input where it is


def runs_log(state_dir: Path) -> Path:
    return state_dir / "record-runs.jsonl"


def read_runs(state_dir: Path) -> list[dict[str, object]]:
    p = runs_log(state_dir)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class RecordEngine(FileEngine):
    name = "record"
    extensions: ClassVar[frozenset[str]] = frozenset({".txt", ".dat", ".bin"})
    Params = RecordParams
    supports_cancel = True
    supports_resume = True

    async def run(self, job: Job, ctx: JobContext) -> Done | Wait:
        p = RecordParams.model_validate(job.params)
        self._log(ctx, job, "start")
        if p.wait_once and not job.checkpoint.get("waited"):
            await ctx.save({"waited": True}, remote_task_id=f"rec-{job.id}")
            return Wait(p.wait_once, "waiting on a pretend remote task")
        steps = max(1, int(p.seconds / 0.05))
        for i in range(steps):
            ctx.check_cancelled()
            await asyncio.sleep(p.seconds / steps)
            await ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}")
        if p.fail and job.attempts <= p.fail_times:
            if p.fail == "retryable":
                raise RetryableError(
                    "pretend 429", provider="record", code="Throttling", retry_after=p.retry_after
                )
            if p.fail == "permanent":
                raise PermanentError("pretend 400", provider="record", code="InvalidParameter")
            raise InputError(f"{Path(job.input_path).name} is not readable", hint="drop a valid file")
        data = Path(job.input_path).read_bytes()
        usage = {"input_tokens": len(data), "output_tokens": 1}
        if p.ask:
            provider = ctx.providers.vision(job.provider)
            answer = await provider.generate(
                VisionRequest(model="qwen-vl-max-latest", parts=[TextPart(data.decode(errors="replace"))])
            )
            data = answer.text.encode()
            usage = answer.usage.as_dict()
        out = files.write_bytes(ctx.output_dir / f"{job.id}-{Path(job.input_path).name}.out", data)
        self._log(ctx, job, "done")
        return Done([out], usage=usage, archive_input=not p.keep_input)

    def _log(self, ctx: JobContext, job: Job, event: str) -> None:
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"job": job.id, "event": event, "pid": os.getpid(), "attempt": job.attempts}) + "\n"
        with open(runs_log(ctx.state_dir), "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


class FolderRecordEngine:
    """A folder-unit test engine: counts the files of its folder."""

    name = "folder-record"
    unit = "folder"
    extensions: ClassVar[frozenset[str]] = frozenset({".zip"})
    Params = RecordParams
    supports_cancel = True
    supports_resume = False

    def inputs_for(self, path: Path) -> list[Path] | None:
        return [path] if path.is_dir() or path.suffix.lower() in self.extensions else None

    async def run(self, job: Job, ctx: JobContext) -> Done:
        root = Path(job.input_path)
        found = sorted(p for p in root.rglob("*") if p.is_file())
        out = files.write_text(ctx.output_dir / f"{root.name}-{job.id}.count", str(len(found)))
        p = RecordParams.model_validate(job.params)
        if p.consume:  # like the cluster engine: the unit changes under its job, in steps
            half = len(found) // 2
            for f in found[:half]:
                f.unlink()
            await asyncio.sleep(p.seconds)
            for f in found[half:]:
                f.unlink()
            await asyncio.sleep(p.seconds)  # finishing touches (cluster: contact sheets)
            if not any(root.iterdir()):
                root.rmdir()
        # a consuming engine puts its unit's files away itself (cluster files them per person)
        return Done([out], archive_input=not p.consume)

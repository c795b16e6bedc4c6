"""The video-gen engine: which dropped files make a unit, the limits one daemon's jobs share (a gate
per provider and model), and the choice of each video's output name. One job's run, and how it
is never paid twice, is in `run.py`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

from dropflow.daemon.core.jobs import ACTIVE, Job
from dropflow.engine.base import FileEngine, JobContext, Result
from dropflow.engine.videogen.gate import ModelGate
from dropflow.engine.videogen.job import ALL_SUFFIXES, unit_inputs
from dropflow.engine.videogen.params import VideoGenParams
from dropflow.engine.videogen.run import Run


class VideoGenEngine(FileEngine):
    """`.txt` prompts, images with a same-named `.txt` and `.yaml` job files become `<name>.mp4` + `.json`."""

    name: ClassVar[str] = "video-gen"
    extensions: ClassVar[frozenset[str]] = ALL_SUFFIXES
    Params = VideoGenParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True

    def __init__(self) -> None:
        # one engine instance per daemon (the router keeps it): these are the daemon's shared limits
        self._gates: dict[tuple[str, str], ModelGate] = {}
        self._names: asyncio.Lock | None = None
        self._chosen: set[str] = set()  # output names chosen by this daemon (used when no store is at hand)

    def inputs_for(self, path: Path) -> list[Path] | None:
        return unit_inputs(path)

    def gate(self, provider: str, model: str) -> ModelGate:
        return self._gates.setdefault((provider, model), ModelGate(provider, model))

    async def run(self, job: Job, ctx: JobContext) -> Result:
        """Submit, follow or download, depending on how far the job got.

        Raises InputError (unreadable unit), PermanentError (task FAILED / UNKNOWN, deadline,
        unresolved submission), RetryableError (429, network, download), AuthError, JobCancelled.
        """
        params = VideoGenParams.model_validate(job.params)
        # a task is followed through the provider that created it, even if the default changed since
        started = job.checkpoint.get("phase") in ("submitting", "remote", "download")
        provider = ctx.providers.videogen(job.checkpoint.get("provider") if started else job.provider)
        return await Run(self, job, ctx, params, provider).run()

    async def output_path(self, run: Run) -> Path:
        """`<name>.mp4` in outputs/video-gen[/<batch>], chosen once per job and saved in its checkpoint.

        A name is free when neither the video nor its `.json` exists and no other unfinished job
        chose it (they are written later, so the disk alone cannot tell).
        """
        chosen = run.cp.get("output")
        if chosen and _ours(Path(chosen), run.task_id):
            return Path(chosen)
        if self._names is None:
            self._names = asyncio.Lock()
        async with self._names:
            store = run.ctx.tasks
            if store is None:
                taken = set(self._chosen)
            else:
                # failed jobs too: a retry of one writes under the name it chose
                jobs = await store.list(engine=run.job.engine, status=(*ACTIVE, "failed"))
                taken = {
                    str(j.checkpoint["output"])
                    for j in jobs
                    if j.id != run.job.id and j.checkpoint.get("output")
                }
            folder = run.ctx.output_dir / run.job.batch if run.job.batch else run.ctx.output_dir
            stem = Path(run.job.input_path).stem
            candidate, n = folder / f"{stem}.mp4", 2
            while candidate.exists() or candidate.with_suffix(".json").exists() or str(candidate) in taken:
                candidate, n = folder / f"{stem} ({n}).mp4", n + 1
            run.cp["output"] = str(candidate)
            await run.save()
            self._chosen.add(str(candidate))
        return candidate


def _ours(video: Path, task_id: str) -> bool:
    """Whether a name chosen earlier still belongs to this job: its `.json`, if written, names our task."""
    meta = video.with_suffix(".json")
    if not meta.exists():
        return True
    try:
        return bool(json.loads(meta.read_text(encoding="utf-8")).get("task_id") == task_id)
    except (OSError, ValueError, AttributeError):
        return False

"""The annotate engine: a video dropped into inbox/annotate/ becomes a timed annotation by a vision model.

One job, in stages (each reports progress, so `dropflow jobs` and the TUI show where it is):

1. sampling  frames at `fps` (or one every `interval` s), longest side `max_side`, static repeats
             dropped (`frames.py`);
2. speech    only when a template in use has ``{videoAsrText}``: the soundtrack in timed chunks
             through a speech-recognition model (`asr.py`);
3. segments  the frames split under the per-request frame limit, one vision request per segment,
             each answer keeping its segment's start and end;
4. summary   two-stage mode (Bailian video analysis): a text model joins the segment analyses
             through ``{videoAnalysisText}``, ``{videoAsrText}`` and ``{videoExtraInfo}``;
5. outputs   ``<name>.json`` and ``<name>.txt`` in outputs/annotate/[<batch>/], written atomically.

Every model call goes through the answer cache (`answer_cache.py`) first: a retry after a 429,
a restart after a crash, or the same video dropped again never pays twice for the same request.

`mode: bailian` hands the whole job to Bailian's hosted video analysis instead (`bailian.py`):
upload (or a `.url` sidecar), submit, then poll between `Wait`s, and cancel the task on a user's
cancel while it is still queued; the request is checked and built in `bailian_request.py`, the
same outputs are written by `bailian_output.py`.

This module is the engine's face to the daemon; the work lives beside it: `params.py` (the
parameters), `templates.py` and `sidecars.py` (what a job reads besides the video), `segments.py`,
`calls.py` (sending requests) and `ledger.py` (what they cost), `output.py`, and `run.py` (one job,
stage by stage).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from dropflow.engine.annotate.params import AnnotateParams
from dropflow.engine.annotate.run import Run
from dropflow.engine.annotate.sidecars import EXTRA_SUFFIX, ROLES_SUFFIXES, URL_SUFFIX, sidecar
from dropflow.engine.base import FileEngine, JobContext, Result
from dropflow.engine.errors import DropflowError
from dropflow.engine.media import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job


class AnnotateEngine(FileEngine):
    """Videos -> timed annotations (single prompt, or Bailian-style two-stage analysis)."""

    name: ClassVar[str] = "annotate"
    extensions: ClassVar[frozenset[str]] = VIDEO_EXTENSIONS
    Params: ClassVar[type[BaseModel]] = AnnotateParams
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = (
        True  # answers are cached per request: a rerun pays only what is missing
    )

    def __init__(self) -> None:
        # Decoding is CPU-bound: jobs of one daemon (which keeps one engine instance) decode at
        # most one video per core at a time. Twenty jobs decoding at once on two cores finish no
        # sooner in total, but every one of them finishes late, and their requests wait for it.
        self.decode_slots = asyncio.Semaphore(os.cpu_count() or 1)

    def inputs_for(self, path: Path) -> list[Path] | None:
        """The video, then its `<video>.roles.yaml`, `<video>.extra.txt` and `<video>.url` when present
        (archived with it)."""
        if path.suffix.lower() not in self.extensions:
            return None
        found = [sidecar(path, ROLES_SUFFIXES), sidecar(path, (EXTRA_SUFFIX,)), sidecar(path, (URL_SUFFIX,))]
        return [path, *(p for p in found if p is not None)]

    async def run(self, job: Job, ctx: JobContext) -> Result:
        """`Done`, or `Wait` while a Bailian task (mode: bailian) is in flight.

        Raises InputError (missing/oversized/unreadable video, zero frames, bad photo), ConfigError
        (missing prompt, bad sidecar), provider errors (AuthError on 401, RetryableError on 429/5xx),
        JobCancelled."""
        params = AnnotateParams.model_validate(job.params)
        if params.mode == "bailian":  # hosted: upload, submit, then follow the task between Waits
            from dropflow.engine.annotate.bailian import HostedRun

            return await HostedRun(job, ctx, params).run()
        run = Run(job, ctx, params, self.decode_slots)
        try:
            return await run.run()
        except DropflowError as exc:
            if run.ledger.calls:
                exc.usage = run.ledger.usage()
            raise

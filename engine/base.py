"""The engine contract: what the daemon knows of an engine, and what an engine gets to run a job.

An engine is one class with a name, what it accepts, a pydantic `Params` model
(`extra="forbid"`), explicit capability flags, and ``async run(job, ctx) -> Result``.
The daemon reaches engines only through `dropflow.engine.registry`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from dropflow.engine.errors import JobCancelled
from dropflow.engine.files import check_inside

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Job, JobSpawner, TaskRegistry
    from dropflow.daemon.core.persons import PersonsRepository
    from dropflow.engine.providers.base import VideoGenProvider, VisionProvider


class Params(BaseModel):
    """Base of every engine's parameters: unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Done:
    """The job finished: its output files (already written atomically) and what it spent."""

    outputs: Sequence[Path]
    usage: dict[str, Any] = field(default_factory=dict)
    message: str = "done"
    archive_input: bool = True  # False when the engine consumed or moved its input itself


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `seconds` from now (a remote task in flight): free the worker slot."""

    seconds: float
    message: str
    usage: dict[str, Any] | None = None


Result = Done | Wait


class Providers(Protocol):
    """Provider lookup handed to engines; instances are shared by every job of the daemon."""

    def vision(self, name: str | None) -> VisionProvider: ...

    def videogen(self, name: str | None) -> VideoGenProvider: ...

    def video_analysis(self) -> object:
        """Bailian's hosted video analysis (`providers.bailian.BailianAnalysis`, a provider-layer
        type this layer does not name): the annotate engine's `mode: bailian` checks it is one."""
        ...


class JobContext:
    """What an engine gets besides its job: progress, cancellation, outputs, checkpoints, providers,
    and narrow views of the daemon's store (None when an engine runs without a daemon):

    - `spawner`: insert jobs of its own (a dataset ZIP becomes a job per image);
    - `tasks`: the other jobs of its engine (remote tasks in flight) and notes in a job's history;
    - `persons`: the persons of cluster batches.

    State shared by every job of a daemon (loaded models, decode slots) lives on the engine
    instance: the daemon keeps one per engine.

    `read_roots` are the folders this job may read through links into (the inbox for a dropped
    file, the submitted folder for `dropflow submit`, and the prompts folder): an engine calls
    `check_readable` on every path it opens that the user named (a photo in a folder, a roles
    photo), so a link out of them is never followed.
    """

    def __init__(
        self,
        *,
        job: Job,
        output_dir: Path,
        prompts_dir: Path,
        state_dir: Path,
        providers: Providers,
        logger: logging.Logger,
        report: Callable[[float, str], Awaitable[None]],
        checkpoint: Callable[[dict[str, Any], str | None], Awaitable[None]],
        spawner: JobSpawner | None = None,
        tasks: TaskRegistry | None = None,
        persons: PersonsRepository | None = None,
        read_roots: Sequence[Path] = (),
        note: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.job = job
        self.output_dir = output_dir
        self.prompts_dir = prompts_dir
        self.state_dir = state_dir
        self.providers = providers
        self.log = logger
        self._report = report
        self._checkpoint = checkpoint
        self.spawner = spawner
        self.tasks = tasks
        self.persons = persons
        self.read_roots = (*read_roots, prompts_dir)
        self._note = note
        self.cancel_reason: str | None = None  # 'cancel' or 'pause' once requested

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1). Cheap to call often: writes are throttled."""
        await self._report(fraction, message)

    async def save(self, checkpoint: dict[str, Any], *, remote_task_id: str | None = None) -> None:
        """Durably store engine state (committed before this returns): a restart resumes from it."""
        await self._checkpoint(checkpoint, remote_task_id)

    def check_readable(self, path: Path, *, what: str = "") -> None:
        """Raise `InputError` (naming the link and its target) when `path` is a link out of the
        folders this job may read (`read_roots`); without roots (no daemon) everything is readable."""
        if self.read_roots[:-1]:
            check_inside(path, *self.read_roots, what=what)

    async def warn(self, message: str) -> None:
        """Something the user should know about this job that does not fail it (a fallback to the
        CPU, a prompt the service will truncate): logged, and kept in the job's history, where
        `dropflow job N` and the TUI's job detail show it."""
        self.log.warning("job %d: %s", self.job.id, message)
        if self._note is not None:
            await self._note("warning", message)

    @property
    def cancelled(self) -> bool:
        return self.cancel_reason is not None

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if the user cancelled or paused this job; call between steps."""
        if self.cancel_reason is not None:
            raise JobCancelled(f"job {self.cancel_reason}ed by user")


@runtime_checkable
class Engine(Protocol):
    """One engine: a class registered under `name`."""

    name: ClassVar[str]
    #: 'file': each matching file is a job; 'folder': each direct child (folder or file) of the
    #: route folder is a job, ready when nothing below it changed for the settle window.
    unit: ClassVar[Literal["file", "folder"]]
    #: lower-case suffixes (".mp4") a file unit may have; empty = any.
    extensions: ClassVar[frozenset[str]]
    Params: ClassVar[type[BaseModel]]
    supports_cancel: ClassVar[bool]  # honours ctx.cancelled between steps (and cancels remote work)
    supports_resume: ClassVar[bool]  # continues from ctx.job.checkpoint after a restart

    def inputs_for(self, path: Path) -> list[Path] | None:
        """The files that make up the unit whose primary file is `path` (primary first),
        or None when `path` is not a unit of its own (e.g. the .txt of an image+prompt pair)."""
        ...

    async def run(self, job: Job, ctx: JobContext) -> Result:
        """Process one job; write outputs atomically; return `Done` or `Wait`.

        Raises: any `DropflowError`; its kind decides retry or failure. `JobCancelled` when
        `ctx.cancelled` was seen.
        """
        ...


class FileEngine:
    """Shared defaults for engines whose unit is one file with a known suffix."""

    unit: ClassVar[Literal["file", "folder"]] = "file"
    extensions: ClassVar[frozenset[str]] = frozenset()
    supports_cancel: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = False

    def inputs_for(self, path: Path) -> list[Path] | None:
        if self.extensions and path.suffix.lower() not in self.extensions:
            return None
        return [path]

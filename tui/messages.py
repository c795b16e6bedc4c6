"""Every message the TUI's workers and widgets send, in one place.

Workers do I/O and post one of these with the result; the handler on the receiving widget or
screen updates the UI. A worker that fails is handled once, in `DropflowApp.on_worker_state_changed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from dropflow.daemon.core.jobs import Event, Job
    from dropflow.tui.data import DaemonState, JobRow, Stats
    from dropflow.tui.folders import FolderEntry
    from dropflow.tui.preview import Preview
    from dropflow.tui.window import Fetch


# --- the change poll (app) -------------------------------------------------------------------------


@dataclass
class StoreChanged(Message):
    """Another connection committed (the daemon, a CLI command), or this app made an edit."""

    version: int


@dataclass
class StatsLoaded(Message):
    stats: Stats
    matching: dict[str, int] = field(default_factory=dict)  # filter text -> rows matching it


@dataclass
class DaemonChecked(Message):
    state: DaemonState


# --- the queue -------------------------------------------------------------------------------------


@dataclass
class WindowLoaded(Message):
    """Rows for the queue window, read for `fetch`."""

    fetch: Fetch
    rows: list[JobRow]


@dataclass
class JobHighlighted(Message):
    """The queue's cursor moved to another job (None: the queue is empty)."""

    row: JobRow | None


@dataclass
class JobChosen(Message):
    """Enter on a job: open its detail."""

    job_id: int


@dataclass
class EditDone(Message):
    """A queue edit went into the store; `message` says what happened."""

    job_id: int | None
    action: str
    message: str
    ok: bool


# --- job detail ------------------------------------------------------------------------------------


@dataclass
class JobLoaded(Message):
    job_id: int
    job: Job | None
    events: list[Event]


@dataclass
class LogTailLoaded(Message):
    job_id: int
    lines: list[str]
    source: Path | None


# --- folders and previews --------------------------------------------------------------------------


@dataclass
class FolderListed(Message):
    """The children of one folder node, read in a thread."""

    node_id: int
    entries: list[FolderEntry]
    more: int  # entries left out past the cap


@dataclass
class FolderCounted(Message):
    """Counts for the labels of the top folders: {path: "3 pending · 10 archived"}."""

    labels: dict[Path, str]


@dataclass
class PreviewLoaded(Message):
    path: Path
    preview: Preview


@dataclass
class Enqueued(Message):
    """`dropflow submit` ran for a file or folder chosen in the browser."""

    path: Path
    lines: list[str]
    error: str | None = None

"""What the user can ask for by name: the command palette's entries and the help's key tables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.widgets import Tree

from dropflow.tui.query import SORT_COLUMNS
from dropflow.tui.screens.detail import JobDetailScreen
from dropflow.tui.screens.folders import FoldersScreen
from dropflow.tui.screens.help import Section
from dropflow.tui.screens.queue import QueueScreen
from dropflow.tui.widgets.folder_tree import FolderTree
from dropflow.tui.widgets.job_table import JobTable

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

HELP_NOTES = (
    "Filter (/): Enter keeps it, Esc clears it, Backspace / Ctrl+U / Ctrl+W edit it. Words: a state\n"
    "(queued running waiting paused succeeded failed cancelled, or active / finished), an engine\n"
    "name, batch:NAME, id:N; anything else matches a piece of the input path.\n"
    "Edits go into the store at once; the daemon applies them within a second. With the daemon\n"
    "down the header says so, and the edits wait in the store for its next start."
)
CANNED_FILTERS = (
    ("failed", "failed jobs"),
    ("running", "running jobs"),
    ("active", "unfinished jobs"),
    ("", "every job"),
)


def help_sections(app: AppHost) -> list[Section]:
    """Every binding of every screen, grouped as the user meets them."""
    return [
        ("Everywhere", list(app.BINDINGS)),
        ("Queue", [*JobTable.BINDINGS, *QueueScreen.BINDINGS]),
        ("Job detail", list(JobDetailScreen.BINDINGS)),
        ("Folders", [*Tree.BINDINGS, *FolderTree.BINDINGS, *FoldersScreen.BINDINGS]),
    ]


def palette_commands(app: AppHost) -> Iterator[SystemCommand]:
    yield SystemCommand("Queue", "Show the job queue", app.action_queue)
    yield SystemCommand("Folders", "Browse inbox and outputs, preview, enqueue", app.action_folders)
    yield SystemCommand("Help: keys", "Every key of every screen", app.action_help)
    yield SystemCommand(
        "Pause all engines", "Hold every job (running ones finish)", lambda: app.pause_engine(None, True)
    )
    yield SystemCommand(
        "Resume all engines", "Release the global pause and every engine's own pause", app.resume_all
    )
    for engine in app.engine_names:
        yield SystemCommand(
            f"Pause engine {engine}", f"Hold {engine} jobs", lambda e=engine: app.pause_engine(e, True)
        )
        yield SystemCommand(
            f"Resume engine {engine}", f"Release {engine} jobs", lambda e=engine: app.pause_engine(e, False)
        )
    queue = next((s for s in app.screen_stack if isinstance(s, QueueScreen)), None)
    if queue is None:
        return

    def show(words: str, screen: QueueScreen) -> None:
        app.action_queue()
        screen.set_filter(words)

    for words, what in CANNED_FILTERS:
        yield SystemCommand(
            f"Show {what}", f"Filter the queue: {words or '(no filter)'}", lambda w=words, q=queue: show(w, q)
        )
    for col in SORT_COLUMNS:
        yield SystemCommand(
            f"Sort by {col.name}", "Order the queue", lambda c=col.name, q=queue: q.sort_by(c)
        )

"""What screens and widgets may ask of the app: `AppHost`, implemented by `DropflowApp`.

Screens, widgets and the palette type `self.app` as this protocol instead of importing
`tui.app` (which imports them): the app sits on top, its parts below it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from textual.binding import BindingType
    from textual.screen import Screen

    from dropflow.daemon.core.config import Config
    from dropflow.tui.data import DaemonState, Stats, StoreReader
    from dropflow.tui.poll import StorePoller
    from dropflow.tui.query import JobQuery


class AppHost(Protocol):
    BINDINGS: ClassVar[list[BindingType]]
    cfg: Config
    images: str  # image preview mode: auto / sixel / kitty / halfblock / none
    clock: Callable[[], float]
    project_root: Path | None
    log_file: Path
    engine_names: list[str]
    offline: bool  # the default provider is the offline one (no key set): outputs are placeholders
    reader: StoreReader
    poller: StorePoller
    # the app's reactives: the daemon's state, the header's totals, why a supervised daemon exited
    daemon: DaemonState | None
    stats: Stats | None
    daemon_exit: str | None

    @property
    def screen_stack(self) -> list[Screen[Any]]: ...

    def nudge(self) -> None:
        """Read the store again now (after an edit) instead of at the next poll."""
        ...

    def count_filter(self, query: JobQuery | None) -> None:
        """Count the jobs matching the queue's filter for the header."""
        ...

    def edit_job(
        self, action: str, job_id: int, status: str, label: str, *, leave_on_remove: bool = False
    ) -> None:
        """Apply an edit (cancel, pause, retry, remove, priority); destructive ones ask first."""
        ...

    def pause_engine(self, engine: str | None, paused: bool) -> None:
        """Pause or resume one engine, or every engine with None."""
        ...

    def resume_all(self) -> None:
        """Release the global pause and every engine paused on its own."""
        ...

    def open_job(self, job_id: int) -> None: ...

    def action_pause_all(self) -> None: ...

    def action_folders(self) -> None: ...

    def action_queue(self) -> None: ...

    def action_help(self) -> None: ...

    def short_path(self, path: str) -> str:
        """`path` relative to the project folder when it lies inside it."""
        ...

    def route_engine_for(self, path: Path) -> str | None:
        """The engine a file dropped at `path` would be routed to, or None."""
        ...

"""The dropflow TUI: the app shell. Screens, widgets and I/O live in their own modules; this holds
the store connection, the change poll, the edit flow and the one place worker errors land."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from dropflow.daemon.core.config import Config, redact_url
from dropflow.daemon.core.jobs import StoreUnavailable
from dropflow.daemon.core.store import Store
from dropflow.engine import registry
from dropflow.engine.errors import DropflowError, render
from dropflow.tui import format as fmt
from dropflow.tui.data import DaemonState, Stats, StoreReader
from dropflow.tui.edits import apply_edit
from dropflow.tui.messages import DaemonChecked, EditDone, StatsLoaded, StoreChanged
from dropflow.tui.palette import HELP_NOTES, help_sections, palette_commands
from dropflow.tui.poll import POLL_SECONDS, StorePoller
from dropflow.tui.query import JobQuery
from dropflow.tui.screens.detail import JobDetailScreen
from dropflow.tui.screens.dialogs import ConfirmScreen
from dropflow.tui.screens.folders import FoldersScreen
from dropflow.tui.screens.help import HelpScreen
from dropflow.tui.screens.queue import QueueScreen
from dropflow.tui.supervisor import DaemonProcess


class DropflowApp(App[None]):
    TITLE = "dropflow"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        # naming ctrl+p here too: Textual adds its own palette key only when no binding has the action
        Binding("ctrl+p,colon", "command_palette", "Command palette", show=False),
    ]

    daemon: reactive[DaemonState | None] = reactive(None)
    stats: reactive[Stats | None] = reactive(None)
    matching: reactive[dict[str, int]] = reactive(dict)
    daemon_exit: reactive[str | None] = reactive(None)

    def __init__(
        self,
        cfg: Config,
        *,
        images: str = "auto",
        supervisor: DaemonProcess | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_SECONDS,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.images = images
        self.supervisor = supervisor
        self.clock = clock
        self.poll_interval = poll_interval
        self.project_root: Path | None = cfg.source.parent if cfg.source else None
        self.log_file = cfg.paths.logs / "dropflow.log"
        self.engine_names = list(dict.fromkeys([r.engine for r in cfg.routes] + registry.names()))
        self.offline = _runs_offline(cfg)
        self._stack = AsyncExitStack()
        self._poll_failing = False
        # one edit at a time: a priority step reads the priority, then writes it plus one, so two
        # edits in flight (keys pressed fast over SSH) would both read the old value: "+ +" gave +1
        self._writing = asyncio.Lock()
        self.store: Store
        self.reader: StoreReader
        self.poller: StorePoller

    # --- lifecycle -------------------------------------------------------------------------------

    async def on_mount(self) -> None:
        db = self.cfg.database
        try:
            await self._open(db)
        except (OSError, sqlite3.Error, StoreUnavailable) as exc:
            self.exit(return_code=1, message=f"dropflow: cannot open the job store {redact_url(db)}: {exc}")
            return
        await self.push_screen(QueueScreen())
        self._poll()

    async def _open(self, db: Path | str) -> None:
        """Open three connections to the store, each with one job (WAL lets them run side by side):

        - edits: the store's request methods, one at a time. Kept apart from the reads because a
          read statement still open on a connection pins an old snapshot, and a BEGIN there fails
          at once ("database is locked") if the daemon committed meanwhile.
        - reads: the queue's windows and the job detail; never held up by a scan.
        - watch: the change poll and the header's table scans. It also sees this app's own edits
          as changes (a connection's data_version ignores only its own commits).

        Raises: OSError / sqlite3.Error when the database cannot be created or read.
        """
        self.store = await self._stack.enter_async_context(Store.open(db))  # creates and migrates
        # a daemon beats every lease/3 seconds: three missed beats and it counts as gone
        stale = self.cfg.scheduler.lease_seconds + 5
        reads = await self._stack.enter_async_context(Store.open(db, readonly=True))
        self.reader = StoreReader(reads, stale_after=stale, clock=self.clock)
        watch = await self._stack.enter_async_context(Store.open(db, readonly=True))
        self.poller = StorePoller(
            StoreReader(watch, stale_after=stale, clock=self.clock), interval=self.poll_interval
        )

    async def on_unmount(self) -> None:
        self.workers.cancel_all()
        await self._stack.aclose()

    # --- the change poll -----------------------------------------------------------------------------

    @work(group="store-poll", name="store-poll", exit_on_error=False)
    async def _poll(self) -> None:
        await self.poller.run(
            self._store_changed,
            lambda state: self.post_message(DaemonChecked(state)),
            lambda stats, matching: self.post_message(StatsLoaded(stats, matching)),
        )

    def _store_changed(self, version: int) -> None:
        # every screen on the stack, so the queue under a dialog is current when it comes back
        for screen in self.screen_stack:
            screen.post_message(StoreChanged(version))

    def nudge(self) -> None:
        """Refresh now rather than at the next poll (after this app's own edits)."""
        self.poller.nudge()

    def count_filter(self, query: JobQuery | None) -> None:
        self.poller.filter_query = query
        self.poller.want_stats()

    def on_daemon_checked(self, message: DaemonChecked) -> None:
        self._poll_failing = False
        self.daemon = message.state
        if self.supervisor is not None:
            code = self.supervisor.exit_code()
            if code is not None:
                self.daemon_exit = f"daemon exited (code {code}): see {self.supervisor.console_log}"

    def on_stats_loaded(self, message: StatsLoaded) -> None:
        self.stats = message.stats
        self.matching = message.matching

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every worker's failure lands here: shown once, and the poll is restarted."""
        if event.state != WorkerState.ERROR:
            return
        worker, error = event.worker, event.worker.error
        text = render(error) if isinstance(error, DropflowError) else f"{type(error).__name__}: {error}"
        if worker.group == "store-poll":
            if not self._poll_failing:
                self.notify(f"cannot read the store ({text}); retrying", severity="error", timeout=8)
            self._poll_failing = True
            self.set_timer(2.0, self._poll)
            return
        self.notify(text, title=f"{worker.name} failed", severity="error", timeout=8)

    # --- edits -------------------------------------------------------------------------------------

    def edit_job(
        self, action: str, job_id: int, status: str, label: str, *, leave_on_remove: bool = False
    ) -> None:
        """Apply an edit; remove, and cancel of work in flight, ask first."""
        question = None
        if action == "remove":
            question = f"Remove the record of job {job_id} ({label})?\nIts input and output files stay where they are."
        elif action == "cancel" and status in ("running", "waiting"):
            question = f"Cancel job {job_id} ({label})?\nIt is {status}: the work in flight is dropped."
        if question is None:
            self._edit(action, job_id)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._edit(action, job_id)

        self.push_screen(ConfirmScreen(question), answer)

    @work(group="edit", name="edit", exit_on_error=False)
    async def _edit(self, action: str, job_id: int) -> None:
        async with self._writing:
            result = await apply_edit(self.store, action, job_id)
        self.post_message(EditDone(job_id, result.action, result.message, result.ok))

    @work(group="edit", name="pause-engines", exit_on_error=False)
    async def _pause_engine(self, engine: str | None, paused: bool) -> None:
        async with self._writing:
            await self.store.pause_engine(engine, paused)
        what = engine or "all engines"
        self.post_message(EditDone(None, "pause-engine", f"{'paused' if paused else 'resumed'} {what}", True))

    @work(group="edit", name="resume-engines", exit_on_error=False)
    async def _resume_all(self) -> None:
        async with self._writing:
            _, engines = await self.store.paused_engines()
            for engine in sorted(engines):
                await self.store.pause_engine(engine, False)
            await self.store.pause_engine(None, False)
        also = f" (and {', '.join(sorted(engines))})" if engines else ""
        self.post_message(EditDone(None, "pause-engine", f"resumed all engines{also}", True))

    def on_edit_done(self, message: EditDone) -> None:
        self.notify(message.message, severity="information" if message.ok else "warning", timeout=4)
        screen = self.screen
        if (
            message.action == "remove"
            and message.ok
            and isinstance(screen, JobDetailScreen)
            and screen.job_id == message.job_id
        ):
            self.pop_screen()
        self.nudge()

    def action_pause_all(self) -> None:
        paused = bool(self.stats and self.stats.paused_all)
        self._pause_engine(None, not paused)

    # --- navigation --------------------------------------------------------------------------------

    def open_job(self, job_id: int) -> None:
        self.push_screen(JobDetailScreen(job_id))

    def action_folders(self) -> None:
        if isinstance(self.screen, FoldersScreen):
            self.pop_screen()
        else:
            self.push_screen(FoldersScreen())

    def action_queue(self) -> None:
        while len(self.screen_stack) > 2:  # the default screen, then the queue
            self.pop_screen()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(help_sections(self), HELP_NOTES))

    def short_path(self, path: str) -> str:
        """A path as the queue shows it: inside the inbox relative to it (the route folder leads),
        else relative to the project, else with ~ for home."""
        inbox = self.cfg.paths.inbox
        if Path(path).is_relative_to(inbox):
            return fmt.display_path(path, inbox)
        return fmt.display_path(path, self.project_root)

    def route_engine_for(self, path: Path) -> str | None:
        """The engine of the route whose inbox folder holds `path`, if any."""
        inbox = self.cfg.paths.inbox
        for route in self.cfg.routes:
            folder = inbox / route.folder if route.folder else inbox
            if path == folder or folder in path.parents:
                return route.engine
        return None

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    def pause_engine(self, engine: str | None, paused: bool) -> None:
        """Hold or release one engine's jobs (None: the global pause, over every engine)."""
        self._pause_engine(engine, paused)

    def resume_all(self) -> None:
        """Release the global pause and every engine paused on its own: "resume all" means that
        everything runs again, not that engines paused one by one stay held."""
        self._resume_all()


def _runs_offline(cfg: Config) -> bool:
    """Whether routes without a provider of their own run on the offline placeholder provider."""
    from dropflow.engine.providers import resolve_default

    try:
        return resolve_default(cfg.providers)[0] == "offline"
    except DropflowError:  # an unreadable key file: the daemon says so; the header does not guess
        return False

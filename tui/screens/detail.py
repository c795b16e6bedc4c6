"""One job: overview (params, error with its fix), event timeline, outputs with preview, log tail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from dropflow.daemon.core.jobs import Event, Job
from dropflow.tui import format as fmt
from dropflow.tui.logtail import job_lines, log_signature
from dropflow.tui.messages import JobLoaded, LogTailLoaded, StoreChanged
from dropflow.tui.screens.queue import EDIT_BINDINGS
from dropflow.tui.widgets.header import STATE_COLORS, StatusHeader
from dropflow.tui.widgets.lists import VimOptionList, VimScroll
from dropflow.tui.widgets.preview import PreviewPane

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

EVENT_STYLES = {"state": "bold", "error": "red", "command": "magenta", "note": "dim", "progress": "cyan"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


class JobDetailScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back"),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('events')", "Events", show=False),
        Binding("3,o", "tab('outputs')", "Outputs", show=False),
        Binding("4,L", "tab('log')", "Log", show=False),
        *EDIT_BINDINGS,
    ]
    DEFAULT_CSS = """
    JobDetailScreen #detail-title { height: 2; padding: 0 1; background: $boost; }
    JobDetailScreen TabbedContent { height: 1fr; }
    JobDetailScreen TabPane { padding: 0 1; }
    JobDetailScreen #outputs-list { width: 40%; min-width: 24; height: 1fr; }
    JobDetailScreen #outputs-preview { width: 1fr; height: 1fr; }
    """

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.job: Job | None = None
        self.events: list[Event] = []
        self.log_lines: list[str] = []
        self._outputs: list[str] = []
        self._log_sig: tuple[int, int] | None = None  # the log file as last read: (size, mtime)
        self._log_stale = True  # read at the next check whatever the signature says
        self._log_reading = False
        self._log_drawn = False

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        yield Static(Text(f"job {self.job_id} …", style="dim"), id="detail-title")
        with TabbedContent(initial="overview"):
            with TabPane("1 Overview", id="overview"), VimScroll(id="overview-scroll"):
                yield Static(id="overview-body")
            with TabPane("2 Events", id="events"), VimScroll(id="events-scroll"):
                yield Static(id="events-body")
            with TabPane("3 Outputs", id="outputs"), Horizontal():
                yield VimOptionList(id="outputs-list")
                yield PreviewPane(id="outputs-preview")
            with TabPane("4 Log", id="log"), VimScroll(id="log-scroll"):
                yield Static(id="log-body")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#overview-scroll").focus()
        self.load()
        # the log file is not in the database: look at its size and mtime once a second
        self.set_interval(1.0, self._check_log)

    # --- reads -------------------------------------------------------------------------------------

    def on_store_changed(self, message: StoreChanged) -> None:
        self.load()

    def on_screen_resume(self) -> None:
        self.load()

    def load(self) -> None:
        self._read_job(self.job_id)

    @work(exclusive=True, group="job-detail", name="job-detail", exit_on_error=False)
    async def _read_job(self, job_id: int) -> None:
        reader = self.dapp.reader
        job = await reader.job(job_id)
        events = await reader.events(job_id) if job is not None else []
        self.post_message(JobLoaded(job_id, job, events))

    def _check_log(self) -> None:
        """Read the log again when it moved. Only while the Log tab is shown (a busy daemon's log
        changes all the time), and one read at a time: two reads in flight can end in either
        order, and an older one ending last put its lines back over the newer ones, where they
        stayed until the file grew again. A change during a read is seen at the next check."""
        if self._log_reading or self.job is None or self.query_one(TabbedContent).active != "log":
            return
        sig = log_signature(self.dapp.log_file)
        if sig == self._log_sig and not self._log_stale:
            return
        self._log_sig, self._log_stale, self._log_reading = sig, False, True
        self._read_log(self.dapp.log_file, self.job_id, Path(self.job.input_path).name)

    @work(thread=True, group="job-log", name="job-log", exit_on_error=False)
    def _read_log(self, path: Path, job_id: int, input_name: str) -> None:
        self.post_message(LogTailLoaded(job_id, job_lines(path, job_id, input_name), path))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # the app reports the error; here the next check reads again instead of waiting forever
        if event.worker.group == "job-log" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self._log_reading, self._log_stale = False, True

    # --- showing -----------------------------------------------------------------------------------

    def on_job_loaded(self, message: JobLoaded) -> None:
        message.stop()
        self.job, self.events = message.job, message.events
        title = self.query_one("#detail-title", Static)
        if message.job is None:
            title.update(Text(f"job {self.job_id} no longer exists (removed)", style="bold red"))
            return
        job = message.job
        title.update(self._title(job))
        self.query_one("#overview-body", Static).update(self._overview(job))
        self.query_one("#events-body", Static).update(self._timeline(message.events))
        if job.outputs != self._outputs:
            self._outputs = list(job.outputs)
            options = self.query_one("#outputs-list", OptionList)
            options.clear_options()
            root = self.dapp.project_root
            options.add_options([Option(fmt.display_path(o, root), id=o) for o in job.outputs])
            if job.outputs:
                options.highlighted = 0  # preview the first output as soon as the tab opens
            else:
                options.add_option(Option(Text("no outputs yet", style="dim"), disabled=True))

    def on_log_tail_loaded(self, message: LogTailLoaded) -> None:
        message.stop()
        self._log_reading = False
        if message.job_id != self.job_id:
            return
        if self._log_drawn and message.lines == self.log_lines:
            return  # only other jobs' lines moved: leave the view (and where it is scrolled) alone
        self._log_drawn = True
        self.log_lines = message.lines
        body = (
            Text("\n".join(message.lines))
            if message.lines
            else Text(f"no lines about job {self.job_id} in {message.source} yet", style="dim")
        )
        self.query_one("#log-body", Static).update(body)
        self.query_one("#log-scroll", VimScroll).scroll_end(animate=False)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "log":
            self._log_stale = True  # read now, whatever the file did meanwhile
            self._check_log()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self.query_one(PreviewPane).show_path(Path(event.option.id))

    def _title(self, job: Job) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"job {job.id} ", style="bold")
        text.append(f"{job.engine}  ")
        text.append(job.status, style=STATE_COLORS.get(job.status) or "bold")
        if job.control:
            text.append(f" ({job.control} requested)", style="yellow")
        fraction, message = fmt.shown_progress(job.status, job.progress, job.progress_message)
        if fraction is not None:
            text.append(f"  {fmt.bar(fraction, 16)} {int(fraction * 100)}%")
        if message:
            text.append(f"  {message}", style="dim")
        text.append("\n" + fmt.display_path(job.input_path, self.dapp.project_root))
        return text

    def _overview(self, job: Job) -> RenderableType:
        root = self.dapp.project_root
        table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
        table.add_column(style="bold", width=9, no_wrap=True)
        table.add_column(ratio=1)
        rows: list[tuple[str, str]] = [
            ("input", fmt.display_path(job.input_path, root)),
        ]
        if len(job.input_paths) > 1:
            rows.append(("inputs", f"{len(job.input_paths)} files"))
        if job.archived_path:
            rows.append(("archived", fmt.display_path(job.archived_path, root)))
        rows += [
            ("route", job.route + (f"  batch {job.batch}" if job.batch else "") + f"  ({job.source})"),
            ("provider", job.provider or "default"),
            ("attempts", f"{job.attempts}/{job.max_attempts}  priority {job.priority}"),
            ("created", _when(job.created_at)),
            ("started", _when(job.started_at)),
            ("finished", _when(job.finished_at)),
        ]
        if job.next_attempt_at and job.status == "waiting":
            rows.append(("next try", _when(job.next_attempt_at)))
        if job.remote_task_id:
            rows.append(("remote", job.remote_task_id))
        if job.tokens_in or job.tokens_out:
            rows.append(("tokens", f"{job.tokens_in:,} in · {job.tokens_out:,} out"))
        for key, value in rows:
            table.add_row(key, value)
        parts: list[RenderableType] = []
        if job.error:
            err = Text()
            err.append(f"✗ {job.error['kind']}: ", style="bold red")
            err.append(job.error["message"])
            if job.error["hint"]:
                err.append("\nfix: ", style="bold green")
                err.append(job.error["hint"])
            parts += [err, Text()]
        parts.append(table)
        parts.append(Text("\nparams", style="bold"))
        params = (
            json.dumps(job.params, indent=2, ensure_ascii=False) if job.params else "{}  (engine defaults)"
        )
        parts.append(Syntax(params, "json", background_color="default", theme="ansi_dark", word_wrap=True))
        if job.usage:
            parts.append(Text("usage", style="bold"))
            parts.append(
                Syntax(json.dumps(job.usage, indent=2), "json", background_color="default", theme="ansi_dark")
            )
        return Group(*parts)

    def _timeline(self, events: list[Event]) -> RenderableType:
        if not events:
            return Text("no events", style="dim")
        text = Text()
        for e in events:
            text.append(time.strftime("%m-%d %H:%M:%S ", time.localtime(e.at)), style="dim")
            text.append(f"{e.kind:<8}", style=EVENT_STYLES.get(e.kind, ""))
            text.append(e.message + "\n")
        return text

    # --- keys ------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        """Show a tab and focus what scrolls in it, so the arrows work at once."""
        self.query_one(TabbedContent).active = tab
        focus = {"overview": "#overview-scroll", "events": "#events-scroll", "outputs": "#outputs-list"}
        self.query_one(focus.get(tab, "#log-scroll")).focus()

    def action_edit(self, action: str) -> None:
        job = self.job
        if job is None:
            self.notify("this job no longer exists", severity="warning", timeout=2)
            return
        self.dapp.edit_job(
            action,
            job.id,
            job.status,
            fmt.display_path(job.input_path, self.dapp.project_root),
            leave_on_remove=True,
        )

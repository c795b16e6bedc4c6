"""The queue: every job, a window at a time, with the edit keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from dropflow.tui import format as fmt
from dropflow.tui.data import JobRow
from dropflow.tui.messages import JobChosen, JobHighlighted, StoreChanged
from dropflow.tui.query import JobQuery, parse_filter
from dropflow.tui.widgets.filter_line import FilterLine
from dropflow.tui.widgets.header import StatusHeader
from dropflow.tui.widgets.job_table import JobTable, status_text

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

# keys shared by the queue and the job detail: each edits the job under the cursor / on screen
EDIT_BINDINGS: list[BindingType] = [
    Binding("p", "edit('toggle-pause')", "Pause"),
    Binding("c", "edit('cancel')", "Cancel"),
    Binding("r", "edit('retry')", "Retry"),
    Binding("plus,equals_sign", "edit('priority-up')", "Priority +1", key_display="+", show=False),
    Binding("minus", "edit('priority-down')", "Priority -1", key_display="-", show=False),
    Binding("x,delete", "edit('remove')", "Remove", show=False),
]


class QueueScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        *EDIT_BINDINGS,
        Binding("P", "pause_all", "Pause/resume all (the global pause)", show=False),
        Binding("f", "folders", "Folders"),
    ]
    DEFAULT_CSS = """
    QueueScreen #job-info { height: 1; background: $panel; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.query_spec = JobQuery()
        self.highlighted: JobRow | None = None
        self.matching: int | None = None

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    @property
    def table(self) -> JobTable:
        return self.query_one(JobTable)

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        yield JobTable(id="jobs")
        yield FilterLine(id="filter")
        yield Static(id="job-info")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.table.focus()
        self.watch(self.app, "matching", self._matching_changed, init=False)
        # ages in the table move on with the clock: repaint (no read) every 5 s
        self.set_interval(5, self.table.refresh)

    # --- live data -------------------------------------------------------------------------------

    def on_store_changed(self, message: StoreChanged) -> None:
        self.table.invalidate()

    def on_screen_resume(self) -> None:
        self.table.invalidate()

    def _matching_changed(self, matching: dict[str, int]) -> None:
        self.matching = matching.get(self.query_spec.filter.text)
        self._show_info()

    def on_job_highlighted(self, message: JobHighlighted) -> None:
        self.highlighted = message.row
        self._show_info()

    def on_job_chosen(self, message: JobChosen) -> None:
        self.dapp.open_job(message.job_id)

    def _show_info(self) -> None:
        row = self.highlighted
        text = Text(no_wrap=True, overflow="ellipsis")
        spec = self.query_spec
        right = f"sort {spec.sort.label()}"
        if not spec.filter.empty:
            shown = f" · {self.matching:,} match" if self.matching is not None else ""
            right = f"filter “{spec.filter.text}”{shown} · " + right
        if row is not None:
            text.append(f"#{row.id} ", style="bold")
            if row.status == "failed" and row.error_message:
                text.append(f"✗ {row.error_message.splitlines()[0]}", style="red")
                if row.error_hint:
                    text.append(f" → {row.error_hint.splitlines()[0]}")
            else:
                text.append(fmt.display_path(row.input_path, self.dapp.project_root))
                _, message = fmt.shown_progress(row.status, row.progress, row.progress_message)
                if message:
                    text.append(f" · {message}", style="dim")
                if row.status != status_text(row):
                    text.append(f" · {status_text(row)}", style="yellow")
        tail = Text("  " + right, style="dim")
        text.truncate(max(0, self.size.width - 2 - tail.cell_len), overflow="ellipsis", pad=True)
        text.append_text(tail)
        self.query_one("#job-info", Static).update(text)

    # --- filter and sort ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter line (also what `/` in the footer does)."""
        self.query_one(FilterLine).open(self.query_spec.filter.text)

    def on_key(self, event: events.Key) -> None:
        """`/` opens the filter line; while open, editing keys go to it (see `FilterLine`). Handled
        here, where keys arrive in order, rather than as bindings, which run later."""
        line = self.query_one(FilterLine)
        if not line.is_open:
            if event.key == "slash":
                event.stop()
                event.prevent_default()
                self.action_filter()
            return
        if event.key == "enter":
            line.close()
        elif event.key == "escape":
            self.action_clear_filter()
        elif line.feed(event.key, event.character, event.is_printable):
            self._set_filter(line.text)
        else:
            return  # arrows, PgUp/PgDn: the table moves while the line stays open
        event.stop()
        event.prevent_default()

    def action_clear_filter(self) -> None:
        self.query_one(FilterLine).close()
        self._set_filter("")

    def set_filter(self, text: str) -> None:
        """Filter the queue (the command palette's canned filters)."""
        self.query_one(FilterLine).close()
        self._set_filter(text)

    def _set_filter(self, text: str) -> None:
        parsed = parse_filter(text, self.dapp.engine_names)
        if parsed == self.query_spec.filter:
            return
        if parsed.problems:
            self.notify("; ".join(parsed.problems), severity="warning", timeout=3)
        self._set_query(JobQuery(parsed, self.query_spec.sort))

    def action_sort(self) -> None:
        self._set_query(JobQuery(self.query_spec.filter, self.query_spec.sort.next_column()))

    def action_reverse_sort(self) -> None:
        self._set_query(JobQuery(self.query_spec.filter, self.query_spec.sort.flipped()))

    def sort_by(self, column: str) -> None:
        self._set_query(JobQuery(self.query_spec.filter, type(self.query_spec.sort)(column)))

    def _set_query(self, query: JobQuery) -> None:
        self.query_spec = query
        self.matching = None
        self.table.set_query(query)
        self.dapp.count_filter(None if query.filter.empty else query)
        self._show_info()

    # --- edits -------------------------------------------------------------------------------------

    def action_edit(self, action: str) -> None:
        row = self.table.selected
        if row is None:
            self.notify("no job selected", severity="warning", timeout=2)
            return
        self.dapp.edit_job(
            action, row.id, row.status, fmt.display_path(row.input_path, self.dapp.project_root)
        )

    def action_pause_all(self) -> None:
        self.dapp.action_pause_all()

    def action_folders(self) -> None:
        self.dapp.action_folders()

"""The queue table: draws only the rows on screen, reads them a window at a time.

A line-API widget over `JobWindow`: `render_line` paints one row from the buffer, so a paint
costs the same with 100 jobs or 100,000 (the stock DataTable builds every row first). Reads run
one at a time in the `queue-window` worker; their rows come back as `WindowLoaded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, cast

from rich.segment import Segment
from rich.style import Style
from textual import events, work
from textual.binding import Binding, BindingType
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from dropflow.tui import format as fmt
from dropflow.tui.data import JobRow
from dropflow.tui.messages import JobChosen, JobHighlighted, WindowLoaded
from dropflow.tui.query import JobQuery
from dropflow.tui.window import Fetch, JobWindow

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

STATUS_STYLES: dict[str, Style] = {
    "queued": Style(),
    "running": Style(color="cyan", bold=True),
    "waiting": Style(color="yellow"),
    "paused": Style(color="magenta"),
    "succeeded": Style(color="green"),
    "failed": Style(color="red", bold=True),
    "cancelled": Style(dim=True),
}


def status_text(row: JobRow) -> str:
    """The status as shown: a pending request shows as `cancel…` / `pause…` until applied."""
    if row.control and row.status == "running":
        return f"{row.control}…"
    return row.status


@dataclass(frozen=True)
class Column:
    name: str
    title: str
    width: int  # 0: takes the room left
    right: bool = False


def layout(width: int) -> list[Column]:
    """Columns for a terminal `width` cells wide; the input column gets what is left."""
    cols = [
        Column("id", "ID", 7, right=True),
        Column("engine", "ENGINE", 9),
        Column("input", "INPUT", 0),
        Column("status", "STATUS", 9),
        Column("progress", "PROGRESS", 11),
        Column("attempts", "TRY", 5, right=True),
        Column("age", "AGE", 4, right=True),
        Column("tokens", "TOKENS", 6, right=True),
    ]
    if width >= 100:
        cols.insert(6, Column("priority", "PRI", 4, right=True))
    fixed = sum(c.width for c in cols) + len(cols) - 1
    flex = max(8, width - fixed)
    return [Column(c.name, c.title, flex, c.right) if c.width == 0 else c for c in cols]


class JobTable(Widget, can_focus=True):
    """The job list. Keys: arrows/j/k, PgUp/PgDn, Home/End (g/G), Enter for detail."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False),
        Binding("home,g", "home", "First", show=False),
        Binding("end,G", "end", "Last", show=False),
        Binding("enter", "choose", "Detail"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"job-table--header", "job-table--cursor", "job-table--empty"}
    DEFAULT_CSS = """
    JobTable { height: 1fr; }
    JobTable > .job-table--header { text-style: bold; background: $panel; }
    JobTable > .job-table--cursor { background: $accent 60%; color: $text; }
    JobTable:blur > .job-table--cursor { background: $accent 30%; }
    JobTable > .job-table--empty { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.query_spec = JobQuery()
        self.window = JobWindow(page=20, terms=len(self.query_spec.sort.terms))
        self.loads = 0  # reads applied: tests and the bench wait on it
        self.rows_painted = False  # a job row has been drawn (the bench's "first paint")
        self._busy = False
        self._in_flight: Fetch | None = None
        self._sized = False  # no read before the first layout: it would be sized for nothing
        self._released = False
        self._last_highlight: JobRow | None = None

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    # --- what the screen asks ----------------------------------------------------------------

    def set_query(self, query: JobQuery) -> None:
        """Show another filter or sort, from its first row."""
        self.query_spec = query
        self.window.reset(len(query.sort.terms))
        self._pump()

    def invalidate(self) -> None:
        """The store changed: re-read the buffered rows."""
        self.window.invalidate()
        self._pump()

    @property
    def selected(self) -> JobRow | None:
        return self.window.selected

    @property
    def reading(self) -> bool:
        """A window read is in flight."""
        return self._busy

    # --- reads -----------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start the next read the window wants, one at a time (reads are ordered, none is lost)."""
        if self._busy or not self._sized:
            return
        fetch = self.window.next_fetch()
        if fetch is None:
            return
        self._busy = True
        self._in_flight = fetch
        self._read(fetch, self.query_spec)

    @work(group="queue-window", name="queue-window", exit_on_error=False)
    async def _read(self, fetch: Fetch, query: JobQuery) -> None:
        rows = await self.dapp.reader.window(query, fetch.kind, fetch.anchor, fetch.limit)
        self.post_message(WindowLoaded(fetch, rows))

    def on_window_loaded(self, message: WindowLoaded) -> None:
        message.stop()
        self._busy = False
        self._in_flight = None
        if self.window.apply(message.fetch, message.rows):
            self.loads += 1
            self.refresh()
            self._highlight()
        self._pump()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # the app reports the error; the table stops waiting and asks again in a second (a locked
        # database passes), so a failed read never leaves a stale window up until the next change
        if event.worker.group == "queue-window" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self._busy = False
            if self._in_flight is not None:
                self.window.retry(self._in_flight)
                self.set_timer(1.0, self._pump)

    def _highlight(self) -> None:
        row = self.window.selected
        if row != self._last_highlight:
            self._last_highlight = row
            self.post_message(JobHighlighted(row))

    # --- keys and mouse ----------------------------------------------------------------------------

    def _moved(self) -> None:
        self.refresh()
        self._highlight()
        self._pump()

    def action_move(self, delta: int) -> None:
        self.window.move(delta)
        self._moved()

    def action_page(self, pages: int) -> None:
        self.window.move(pages * self.window.page)
        self._moved()

    def action_home(self) -> None:
        self.window.home()
        self._moved()

    def action_end(self) -> None:
        self.window.end()
        self._moved()

    def action_choose(self) -> None:
        row = self.window.selected
        if row is not None:
            self.post_message(JobChosen(row.id))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.window.select_index(event.y - 1)
            self._moved()
            if event.chain >= 2:
                self.action_choose()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.action_move(3)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.action_move(-3)

    def on_resize(self, event: events.Resize) -> None:
        self.window.resize(max(1, event.size.height - 1))
        self._sized = True
        self._pump()

    # --- painting --------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        if self.window.loaded and not self._released:
            self._released = True
            self.dapp.poller.release()  # the first rows are being drawn: the header totals may scan
        width = self.size.width
        base = self.rich_style
        cols = layout(width)
        if y == 0:
            return self._header(cols, width)
        visible = self.window.visible
        index = y - 1
        if index >= len(visible):
            if index == 0 and self.window.loaded:
                return self._empty_line(width)
            return Strip([Segment(" " * width, base)], width)
        row = visible[index]
        self.rows_painted = True
        selected = self.window.top + index == self.window.cursor
        style = self.get_component_rich_style("job-table--cursor") if selected else None
        return Strip(self._cells(row, cols, base, style), width).adjust_cell_length(width, base)

    def _header(self, cols: list[Column], width: int) -> Strip:
        style = self.get_component_rich_style("job-table--header")
        sort = self.query_spec.sort
        arrow = "▼" if sort.terms[0][1] else "▲"
        titles = []
        for c in cols:
            title = c.title + (arrow if c.name == sort.column else "")
            titles.append(fmt.cell(title, c.width, right=c.right))
        return Strip([Segment(" ".join(titles), style)]).adjust_cell_length(width, style)

    def _empty_line(self, width: int) -> Strip:
        f = self.query_spec.filter
        text = (
            f"  no jobs match “{f.text}” (Esc clears the filter)"
            if not f.empty
            else "  no jobs yet: drop files into the inbox, or press f to browse and enqueue"
        )
        style = self.get_component_rich_style("job-table--empty")
        return Strip([Segment(fmt.fit(text, width, keep_end=False), style)]).adjust_cell_length(width, style)

    def _cells(self, row: JobRow, cols: list[Column], base: Style, cursor: Style | None) -> list[Segment]:
        now = self.dapp.clock()
        segments: list[Segment] = []
        for i, c in enumerate(cols):
            if i:
                segments.append(Segment(" ", cursor or base))
            style = base
            if c.name == "id":
                text = str(row.id)
            elif c.name == "engine":
                text = row.engine
            elif c.name == "input":
                text = self.dapp.short_path(row.input_path)
                segments.append(Segment(fmt.cell(text, c.width, keep_end=True), cursor or base))
                continue
            elif c.name == "status":
                text = status_text(row)
                style = base + STATUS_STYLES.get(row.status, Style())
            elif c.name == "progress":
                fraction, _ = fmt.shown_progress(row.status, row.progress, row.progress_message)
                text = (
                    "" if fraction is None else fmt.bar(fraction, c.width - 5) + f"{int(fraction * 100):>4}%"
                )
                style = base + STATUS_STYLES.get(row.status, Style())
            elif c.name == "attempts":
                text = f"{row.attempts}/{row.max_attempts}"
            elif c.name == "priority":
                text = str(row.priority) if row.priority else ""
            elif c.name == "age":
                text = fmt.age(now - row.created_at)
            else:
                text = fmt.count(row.tokens)
            segments.append(Segment(fmt.cell(text, c.width, right=c.right), cursor or style))
        return segments

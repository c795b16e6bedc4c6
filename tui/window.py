"""The queue's window on the job table: a buffered slice of the ordered rows, the cursor, and which
fetch to run next. Pure state: no I/O, no Textual, so paging is tested without a terminal.

The buffer holds a few pages around the view. Moving the cursor inside it costs nothing; when the
view comes within a page of a buffer edge that is not the end of the result set, `next_fetch`
asks for two more pages beyond that edge (keyset: strictly after the edge row), and the far side
is trimmed so the buffer stays bounded however far the user scrolls. A data change re-reads the
buffer from its first row, keeping the selected job selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dropflow.tui.data import FetchKind, JobRow

Purpose = Literal["reset", "end", "refresh", "extend"]


@dataclass(frozen=True)
class Fetch:
    """One read the window wants: what for, which SQL shape, from which row, how many."""

    purpose: Purpose
    kind: FetchKind
    generation: int
    anchor: tuple[Any, ...] | None
    limit: int


class JobWindow:
    BUFFER_PAGES = 3  # pages read on a reset or refresh
    MAX_PAGES = 8  # pages kept at most

    def __init__(self, page: int = 20, terms: int = 1) -> None:
        self.page = max(1, page)
        self.terms = terms  # sort terms: 1 when sorting by id, else 2 (value, id)
        self.rows: list[JobRow] = []
        self.at_start = True  # nothing before rows[0]
        self.at_end = True  # nothing after rows[-1]
        self.top = 0  # index in rows of the first visible row
        self.cursor = 0  # index in rows of the selected row
        self.generation = 0  # bumped on every jump: a read planned before it is stale
        self._shown_generation = -1  # the generation of the rows in the buffer
        self.loaded = False  # the first read has arrived
        self._want: set[str] = {"reset"}

    # --- what the widget shows ---------------------------------------------------------------

    @property
    def visible(self) -> list[JobRow]:
        return self.rows[self.top : self.top + self.page]

    @property
    def selected(self) -> JobRow | None:
        """The job under the cursor; None while the rows on screen belong to a previous filter or
        sort (a key pressed before the new rows arrived must not act on a job no longer listed)."""
        if self.stale:
            return None
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    @property
    def stale(self) -> bool:
        return self._shown_generation != self.generation

    # --- requests ------------------------------------------------------------------------------

    def reset(self, terms: int | None = None) -> None:
        """Start over at the first row (a new filter or sort, or Home)."""
        if terms is not None:
            self.terms = terms
        self.generation += 1
        self._want = {"reset"}

    def jump_end(self) -> None:
        self.generation += 1
        self._want = {"end"}

    def invalidate(self) -> None:
        """The data changed: re-read what is buffered."""
        self._want.add("refresh")

    def retry(self, fetch: Fetch) -> None:
        """A read failed: ask for it again (an extension is re-planned from the state anyway)."""
        if fetch.generation == self.generation and fetch.purpose != "extend":
            self._want.add(fetch.purpose)

    def resize(self, page: int) -> None:
        self.page = max(1, page)
        self._follow()

    # --- cursor ----------------------------------------------------------------------------------

    def move(self, delta: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))
        self._follow()

    def home(self) -> None:
        if self.at_start:
            self.cursor = self.top = 0
        else:
            self.reset()

    def end(self) -> None:
        if self.at_end:
            self.cursor = max(0, len(self.rows) - 1)
            self._follow()
        else:
            self.jump_end()

    def select_index(self, visible_row: int) -> None:
        """Select the row shown on line `visible_row` of the view (a mouse click)."""
        index = self.top + visible_row
        if 0 <= index < len(self.rows):
            self.cursor = index

    def _follow(self) -> None:
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + self.page:
            self.top = self.cursor - self.page + 1
        self.top = max(0, min(self.top, len(self.rows) - self.page))

    # --- reads -----------------------------------------------------------------------------------

    def next_fetch(self) -> Fetch | None:
        """The read to run now, or None when the buffer serves the view. Planning a jump or a
        refresh consumes the request; an extension is re-planned from the state each time."""
        target = self.page * self.BUFFER_PAGES
        if "reset" in self._want:
            self._want.clear()
            return Fetch("reset", "start", self.generation, None, target)
        if "end" in self._want:
            self._want.clear()
            return Fetch("end", "end", self.generation, None, target)
        if "refresh" in self._want:
            self._want.discard("refresh")
            limit = max(len(self.rows), target)
            if self.at_start or not self.rows:
                return Fetch("refresh", "start", self.generation, None, limit)
            return Fetch("refresh", "from", self.generation, self.rows[0].key(self.terms), limit)
        if not self.rows:
            return None
        if not self.at_end and len(self.rows) - (self.top + self.page) < self.page:
            return Fetch("extend", "after", self.generation, self.rows[-1].key(self.terms), 2 * self.page)
        if not self.at_start and self.top < self.page:
            return Fetch("extend", "before", self.generation, self.rows[0].key(self.terms), 2 * self.page)
        return None

    def apply(self, fetch: Fetch, rows: list[JobRow]) -> bool:
        """Take the rows a fetch returned; False when it was stale and changed nothing."""
        if fetch.generation != self.generation:
            return False
        full = len(rows) >= fetch.limit
        if fetch.purpose in ("reset", "end"):
            self._shown_generation = self.generation
        if fetch.purpose == "reset":
            self.rows, self.at_start, self.at_end = rows, True, not full
            self.cursor = self.top = 0
        elif fetch.purpose == "end":
            self.rows, self.at_start, self.at_end = rows, not full, True
            self.cursor = max(0, len(rows) - 1)
            self.top = max(0, len(rows) - self.page)
        elif fetch.purpose == "refresh":
            self._apply_refresh(fetch, rows, full)
        elif fetch.kind == "after":
            if not self.rows or self.rows[-1].key(self.terms) != fetch.anchor:
                return False
            self.rows = self.rows + rows
            self.at_end = not full
            self._trim_front()
        else:  # extend before
            if not self.rows or self.rows[0].key(self.terms) != fetch.anchor:
                return False
            self.rows = rows + self.rows
            self.top += len(rows)
            self.cursor += len(rows)
            self.at_start = not full
            self._trim_back()
        self.loaded = True
        return True

    def _apply_refresh(self, fetch: Fetch, rows: list[JobRow], full: bool) -> None:
        selected = self.selected
        on_screen = self.cursor - self.top
        old_top = self.rows[self.top].id if self.top < len(self.rows) else None
        pinned_top = self.at_start and self.top == 0  # watching the head: new rows come into view
        self.rows = rows
        self.at_start = fetch.kind == "start"
        self.at_end = not full
        ids = [r.id for r in rows]
        if pinned_top:
            self.top = 0
        elif old_top in ids:
            self.top = ids.index(old_top)  # scrolled away: the view stays put as jobs arrive
        else:
            self.top = max(0, min(self.top, len(rows) - self.page))
        if selected is not None and selected.id in ids:
            self.cursor = ids.index(selected.id)  # the selection stays on its job
        else:
            self.cursor = max(0, min(self.top + on_screen, len(rows) - 1))
        self._follow()

    def _trim_front(self) -> None:
        excess = len(self.rows) - self.page * self.MAX_PAGES
        k = min(excess, self.top - self.page)  # keep a page above the view
        if k > 0:
            self.rows = self.rows[k:]
            self.top -= k
            self.cursor -= k
            self.at_start = False

    def _trim_back(self) -> None:
        excess = len(self.rows) - self.page * self.MAX_PAGES
        k = min(excess, len(self.rows) - (self.top + 2 * self.page))  # keep a page below the view
        if k > 0:
            self.rows = self.rows[:-k]
            self.at_end = False

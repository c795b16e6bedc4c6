"""What the queue shows: a filter and a sort order, turned into SQL for keyset pagination.

The queue never counts or loads the whole table: every read is ``WHERE <filter> AND <keyset>
ORDER BY <sort> LIMIT n``. A sort is a primary column plus the id as a tie-break, so a row's
position is fully given by (sort value, id) and the next page starts strictly after the last row
seen. Sorting by id (the default) walks the primary key and costs the same at 100 jobs or
100,000; the other sorts have no index of their own and cost a scan of the matching rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropflow.daemon.core.jobs import ACTIVE, STATUSES, TERMINAL

# rank used when sorting by status: what needs attention first
_STATUS_RANK = ("running", "waiting", "queued", "paused", "failed", "cancelled", "succeeded")
_STATUS_EXPR = "CASE status " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(_STATUS_RANK)) + " END"


@dataclass(frozen=True)
class SortColumn:
    name: str  # what the user sees
    expr: str  # SQL expression of the primary key of the order
    descending: bool  # the natural direction (largest first for progress, tokens, ...)


SORT_COLUMNS: tuple[SortColumn, ...] = (
    SortColumn("id", "id", True),  # newest first
    SortColumn("priority", "priority", True),
    SortColumn("status", _STATUS_EXPR, False),
    SortColumn("engine", "engine", False),
    SortColumn("input", "input_path", False),
    SortColumn("progress", "progress", True),
    SortColumn("attempts", "attempts", True),
    SortColumn("tokens", "(tokens_in + tokens_out)", True),
)
_BY_NAME = {c.name: c for c in SORT_COLUMNS}


@dataclass(frozen=True)
class Sort:
    column: str = "id"
    reverse: bool = False

    def __post_init__(self) -> None:
        if self.column not in _BY_NAME:
            raise ValueError(f"unknown sort column {self.column!r}; known: {', '.join(_BY_NAME)}")

    @property
    def terms(self) -> list[tuple[str, bool]]:
        """(expression, descending) pairs, primary first, id last as the tie-break."""
        col = _BY_NAME[self.column]
        desc = col.descending != self.reverse
        if col.expr == "id":
            return [("id", desc)]
        # the tie-break follows the primary's direction so that `reverse` flips the whole order
        return [(col.expr, desc), ("id", desc)]

    @property
    def key_expr(self) -> str:
        """The primary sort expression, selected with every row so a page can start after it."""
        return self.terms[0][0]

    def next_column(self) -> Sort:
        names = [c.name for c in SORT_COLUMNS]
        return Sort(names[(names.index(self.column) + 1) % len(names)], False)

    def flipped(self) -> Sort:
        return Sort(self.column, not self.reverse)

    def label(self) -> str:
        desc = self.terms[0][1]
        return f"{self.column} {'▼' if desc else '▲'}"


def order_by(sort: Sort, *, backwards: bool = False) -> str:
    parts = []
    for expr, desc in sort.terms:
        if backwards:
            desc = not desc
        parts.append(f"{expr} {'DESC' if desc else 'ASC'}")
    return "ORDER BY " + ", ".join(parts)


def keyset(
    sort: Sort, values: Sequence[Any], *, before: bool, inclusive: bool = False
) -> tuple[str, list[Any]]:
    """The SQL condition for rows strictly after (or before) a row whose sort values are `values`.

    `values` line up with `sort.terms` (for a two-term sort: the primary value, then the id).
    With `inclusive` the row itself matches too (a refresh that starts at the first row shown).
    """
    terms = sort.terms
    if len(values) != len(terms):
        raise ValueError("one value per sort term")
    ors: list[str] = []
    args: list[Any] = []
    for i, (expr, desc) in enumerate(terms):
        after_is_less = desc != before
        last = i == len(terms) - 1
        op = "<" if after_is_less else ">"
        if last and inclusive:
            op += "="
        conds = [f"{e} = ?" for e, _ in terms[:i]] + [f"{expr} {op} ?"]
        ors.append("(" + " AND ".join(conds) + ")")
        args += [*values[:i], values[i]]
    return "(" + " OR ".join(ors) + ")", args


@dataclass(frozen=True)
class Filter:
    """Parsed `/` filter text. Words are ANDed; several statuses or engines are ORed among themselves.

    - a status name (queued, running, waiting, paused, succeeded, failed, cancelled), or `active`
      / `finished`; also `status:NAME`
    - an engine name; also `engine:NAME`
    - `batch:NAME`, `id:123`
    - anything else: a piece of the input path (case-insensitive)
    """

    text: str = ""
    statuses: frozenset[str] = frozenset()
    engines: frozenset[str] = frozenset()
    batches: frozenset[str] = frozenset()
    ids: frozenset[int] = frozenset()
    words: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def empty(self) -> bool:
        return not (self.statuses or self.engines or self.batches or self.ids or self.words)

    def where(self) -> tuple[list[str], list[Any]]:
        conds: list[str] = []
        args: list[Any] = []
        for col, values in (("status", self.statuses), ("engine", self.engines), ("batch", self.batches)):
            if values:
                ordered = sorted(values)
                conds.append(f"{col} IN ({','.join('?' * len(ordered))})")
                args += ordered
        if self.ids:
            ordered_ids = sorted(self.ids)
            conds.append(f"id IN ({','.join('?' * len(ordered_ids))})")
            args += ordered_ids
        for word in self.words:
            # lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not
            conds.append("lower(input_path) LIKE ? ESCAPE '\\'")
            args.append("%" + _escape_like(word.lower()) + "%")
        return conds, args


_STATUS_WORDS: dict[str, tuple[str, ...]] = {s: (s,) for s in STATUSES}
_STATUS_WORDS.update({"active": ACTIVE, "finished": TERMINAL, "done": ("succeeded",), "ok": ("succeeded",)})


def parse_filter(text: str, engines: Iterable[str] = ()) -> Filter:
    """Parse the filter line; unknown `key:` prefixes are reported in `problems`, not silently ignored."""
    known_engines = set(engines)
    statuses: set[str] = set()
    engine_set: set[str] = set()
    batches: set[str] = set()
    ids: set[int] = set()
    words: list[str] = []
    problems: list[str] = []
    for raw in text.split():
        key, sep, value = raw.partition(":")
        low = raw.lower()
        if sep and value:
            k = key.lower()
            if k in ("status", "s"):
                if value.lower() in _STATUS_WORDS:
                    statuses.update(_STATUS_WORDS[value.lower()])
                else:
                    problems.append(f"no status {value!r}")
            elif k in ("engine", "e"):
                engine_set.add(value)
            elif k in ("batch", "b"):
                batches.add(value)
            elif k == "id":
                if value.isdigit():
                    ids.add(int(value))
                else:
                    problems.append(f"id:{value} is not a number")
            else:
                words.append(raw)  # a path piece that happens to hold a colon
        elif low in _STATUS_WORDS:
            statuses.update(_STATUS_WORDS[low])
        elif raw in known_engines:
            engine_set.add(raw)
        else:
            words.append(raw)
    return Filter(
        text=text.strip(),
        statuses=frozenset(statuses),
        engines=frozenset(engine_set),
        batches=frozenset(batches),
        ids=frozenset(ids),
        words=tuple(words),
        problems=tuple(problems),
    )


def _escape_like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class JobQuery:
    """A filter and a sort: everything that decides which rows the queue shows, in which order."""

    filter: Filter = Filter()
    sort: Sort = Sort()

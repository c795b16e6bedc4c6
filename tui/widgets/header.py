"""The two header lines every screen shows: daemon status and uptime, throughput, tokens spent
today, pauses, and the jobs in each state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual.widget import Widget

from dropflow.daemon.core.jobs import STATUSES
from dropflow.tui import format as fmt

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

STATE_COLORS = {
    "queued": "",
    "running": "cyan",
    "waiting": "yellow",
    "paused": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "dim",
}
_SHORT = {"succeeded": "done", "cancelled": "cancel"}


def _num(n: int, compact: bool) -> str:
    return f"{n:,}" if n < 1000 or not compact else fmt.count(n)


def state_counts(counts: dict[str, int], width: int) -> Text:
    """Jobs per state on one line of `width` cells: exact numbers when they fit, else 12k-style,
    else without the states that have no jobs."""
    line = Text()
    for compact, skip_empty in ((False, False), (True, False), (True, True)):
        line = Text(no_wrap=True, overflow="ellipsis")
        for status in STATUSES:
            n = counts.get(status, 0)
            if skip_empty and not n:
                continue
            if line:
                line.append("  ")
            line.append(_SHORT.get(status, status) + " ", style="" if n else "dim")
            line.append(_num(n, compact), style=(STATE_COLORS[status] or "bold") if n else "dim")
        if line.cell_len <= width:
            break
    return line


class StatusHeader(Widget):
    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; padding: 0 1; }
    """
    WATCHED: ClassVar[tuple[str, ...]] = ("daemon", "stats", "daemon_exit")

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    def on_mount(self) -> None:
        for name in self.WATCHED:
            self.watch(self.app, name, self._changed, init=False)
        # uptime is shown to the minute: repaint twice a minute, not every second
        self.set_interval(30, self.refresh)

    def _changed(self, _value: Any) -> None:
        self.refresh()

    def render(self) -> Text:
        app = self.dapp
        now = app.clock()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("dropflow ", style="bold")
        daemon = app.daemon
        if app.daemon_exit:
            text.append(f"✗ {app.daemon_exit}", style="bold red")
        elif daemon is None:
            text.append("… reading the store", style="dim")
        elif daemon.up:
            text.append("● daemon up", style="bold green")
            if daemon.started_at is not None:
                text.append(f" {fmt.duration(now - daemon.started_at)}")
            if daemon.pid is not None:
                text.append(f" pid {daemon.pid}", style="dim")
            if daemon.count > 1:
                text.append(f" ({daemon.count} daemons)")
        else:
            text.append("○ daemon down", style="bold red")
            if daemon.last_seen is not None:
                text.append(f" (seen {fmt.age(now - daemon.last_seen)} ago)", style="dim")
            text.append(" · edits still go in", style="dim")
        stats = app.stats
        if stats is not None:
            if stats.paused_all:
                text.append("  ⏸ all paused", style="bold magenta")
            elif stats.paused_engines:
                text.append(f"  ⏸ {','.join(stats.paused_engines)}", style="magenta")
            if app.offline:
                text.append("  ⚠ OFFLINE", style="bold yellow")  # placeholder output: no key set
            text.append(f"  {stats.per_minute:.1f}/min")
            text.append(f"  {fmt.count(stats.tokens_today) or '0'} tok today")
        text.append("\n")
        if stats is None:
            return text
        text.append_text(state_counts(stats.counts, self.content_size.width))
        return text

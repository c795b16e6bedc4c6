"""`?`: every key of every screen, built from the bindings themselves so it cannot go stale."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from dropflow.tui.widgets.lists import VimScroll

Section = tuple[str, list[BindingType]]


def key_rows(app: App[object], bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) per binding; several keys of one binding are joined with " / "."""
    rows = []
    for b in bindings:
        if not isinstance(b, Binding):
            b = Binding(*b)
        if not b.description:
            continue
        keys = " / ".join(app.get_key_display(Binding(k.strip(), b.action)) for k in b.key.split(","))
        rows.append((keys, b.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 76; max-width: 98%; height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    HelpScreen #help-keys { color: $text-muted; height: 1; }
    """

    def __init__(self, sections: list[Section], notes: str = "") -> None:
        super().__init__()
        self.sections = sections
        self.notes = notes

    def compose(self) -> ComposeResult:
        with Vertical():
            with VimScroll(id="help-body"):
                for title, bindings in self.sections:
                    table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
                    table.add_column("key", style="bold cyan", width=16, no_wrap=True)
                    table.add_column("what", ratio=1)
                    for keys, what in key_rows(self.app, bindings):
                        table.add_row(keys, what)
                    yield Static(Text(title, style="bold underline"))
                    yield Static(table)
                if self.notes:
                    yield Static(Text(self.notes, style="dim"))
            yield Static("Esc / q / ?: close    ↑↓ j k PgUp PgDn: scroll", id="help-keys")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)

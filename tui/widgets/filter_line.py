"""The queue's filter line: edited by the screen from the keys it sees, never focused itself.

Textual routes a key to whatever had focus when the key arrived. Typed fast (or arriving in one
burst over SSH), the letters after `/` would still go to the table, whose bindings they are
(`f` folders, `c` cancel, ...), if `/` moved the focus to an input box. So focus stays on the
table, every key travels the same path in order, and while the line is open the screen feeds the
keys to it here: printable characters, Backspace, Ctrl+U (clear), Ctrl+W (delete a word).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

EDIT_KEYS = ("backspace", "ctrl+u", "ctrl+w")
PLACEHOLDER = "failed, running, an engine, a piece of the path, id:12 … (Enter: keep, Esc: clear)"


class LineEditor:
    """The text of a one-line editor and what each key does to it (pure: no widget, no app)."""

    def __init__(self, text: str = "", *, selected: bool = False) -> None:
        self.text = text
        self.selected = selected and bool(text)  # typing replaces a selected text

    def feed(self, key: str, character: str | None, printable: bool) -> bool:
        """Edit the text with one key; False when the key is not an editing key."""
        typed = printable and bool(character)
        if key not in EDIT_KEYS and not typed:
            self.selected = False
            return False
        if self.selected:  # a selected filter is replaced by typing, erased by deleting
            self.selected = False
            self.text = (character or "") if typed else ""
        elif key == "backspace":
            self.text = self.text[:-1]
        elif key == "ctrl+u":
            self.text = ""
        elif key == "ctrl+w":
            words = self.text.split()[:-1]
            self.text = " ".join(words) + (" " if words else "")
        else:
            self.text += character or ""
        return True


class FilterLine(Static):
    DEFAULT_CSS = """
    FilterLine { display: none; height: 1; padding: 0 1; background: $boost; }
    FilterLine.open { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.editor = LineEditor()

    @property
    def text(self) -> str:
        return self.editor.text

    @property
    def is_open(self) -> bool:
        return self.has_class("open")

    def open(self, text: str) -> None:
        """Show the line with the current filter, selected: typing replaces it, as in a search box."""
        self.editor = LineEditor(text, selected=True)
        self.add_class("open")
        self._show()

    def close(self) -> None:
        self.remove_class("open")

    def feed(self, key: str, character: str | None, printable: bool) -> bool:
        """Edit the text with one key; False when the key is not an editing key."""
        if not self.editor.feed(key, character, printable):
            return False
        self._show()
        return True

    def _show(self) -> None:
        line = Text("/ ", style="bold")
        if self.editor.text:
            line.append(self.editor.text, style="reverse" if self.editor.selected else "")
            line.append("█", style="blink")
        else:
            line.append("█", style="blink")
            line.append(PLACEHOLDER, style="dim")
        self.update(line)

"""Small modal dialogs: a yes/no confirmation and the engine choice for an enqueue."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from dropflow.tui.widgets.lists import VimOptionList

AUTO = "(auto)"  # let the route / file type decide, as `dropflow submit` without --engine


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a destructive edit. y / Enter: yes; n / Esc: no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; max-width: 95%; height: auto; border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen #confirm-keys { color: $text-muted; margin-top: 1; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="confirm-question", markup=False)
            yield Static("y / Enter: yes    n / Esc: no", id="confirm-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class EngineChoiceScreen(ModalScreen[str | None]):
    """Choose the engine for an enqueue; dismisses with the engine name, AUTO, or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    EngineChoiceScreen { align: center middle; }
    EngineChoiceScreen > Vertical {
        width: 60; max-width: 95%; height: auto; max-height: 90%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    EngineChoiceScreen OptionList { height: auto; max-height: 14; }
    EngineChoiceScreen #engine-keys { color: $text-muted; }
    """

    def __init__(self, title: str, engines: list[str], default: str | None) -> None:
        super().__init__()
        self.title_text = title
        self.engines = engines
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="engine-title", markup=False)
            options = [Option("auto: by route and file type", id=AUTO)]
            options += [Option(name, id=name) for name in self.engines]
            yield VimOptionList(*options, id="engine-options")
            yield Static("Enter: enqueue    Esc: cancel", id="engine-keys")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.default in self.engines:
            options.highlighted = self.engines.index(self.default) + 1
        else:
            options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

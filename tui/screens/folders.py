"""The folder browser: inbox and outputs with their counts, a preview, and enqueue with an engine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Tree

from dropflow.engine.errors import DropflowError, render
from dropflow.tui.enqueue import submit
from dropflow.tui.messages import Enqueued, StoreChanged
from dropflow.tui.screens.dialogs import AUTO, EngineChoiceScreen
from dropflow.tui.widgets.folder_tree import FolderTree
from dropflow.tui.widgets.header import StatusHeader
from dropflow.tui.widgets.preview import PreviewPane

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

COUNT_EVERY = 3.0  # seconds between folder recounts driven by store changes


class FoldersScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a,e", "enqueue", "Enqueue…"),
        Binding("R", "reload", "Reload"),
        Binding("escape,f", "back", "Queue"),
    ]
    DEFAULT_CSS = """
    FoldersScreen Horizontal { height: 1fr; }
    FoldersScreen PreviewPane { width: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_count = 0.0

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    @property
    def folder_tree(self) -> FolderTree:
        return self.query_one(FolderTree)

    def compose(self) -> ComposeResult:
        yield StatusHeader()
        with Horizontal():
            yield FolderTree(id="folders")
            yield PreviewPane(id="folder-preview")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.folder_tree.focus()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Path]) -> None:
        path = event.node.data
        if path is not None:
            self.query_one(PreviewPane).show_path(path)

    def on_store_changed(self, message: StoreChanged) -> None:
        # a finished job moves its input to the archive: recount, but not on every progress tick
        now = time.monotonic()
        if now - self._last_count >= COUNT_EVERY:
            self._last_count = now
            self.folder_tree.reload()

    def on_screen_resume(self) -> None:
        self.folder_tree.reload()

    def action_reload(self) -> None:
        self.folder_tree.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

    # --- enqueue -----------------------------------------------------------------------------------

    def action_enqueue(self) -> None:
        path = self.folder_tree.selected_path
        paths = self.dapp.cfg.paths
        if path is None or path in (paths.inbox, paths.outputs):
            self.notify("choose a file or a folder to enqueue", severity="warning", timeout=3)
            return
        engines = self.dapp.engine_names
        default = self.dapp.route_engine_for(path)

        def chosen(engine: str | None) -> None:
            if engine is not None:
                self._submit(path, None if engine == AUTO else engine)

        self.app.push_screen(EngineChoiceScreen(f"Enqueue {path.name} with:", engines, default), chosen)

    @work(thread=True, group="enqueue", name="enqueue", exit_on_error=False)
    def _submit(self, path: Path, engine: str | None) -> None:
        config = self.dapp.cfg.source
        if config is None:
            self.post_message(Enqueued(path, [], "this config was not read from a file; cannot submit"))
            return
        try:
            lines = submit(config, path, engine)
        except DropflowError as exc:
            self.post_message(Enqueued(path, [], render(exc)))
            return
        self.post_message(Enqueued(path, lines))

    def on_enqueued(self, message: Enqueued) -> None:
        message.stop()
        if message.error:
            self.notify(message.error, title="not enqueued", severity="error", timeout=8)
            return
        lines = message.lines
        shown = "\n".join(lines[:4]) + (f"\n… and {len(lines) - 4} more" if len(lines) > 4 else "")
        self.notify(shown or f"{message.path.name}: nothing queued", title="enqueued", timeout=5)
        self.dapp.nudge()

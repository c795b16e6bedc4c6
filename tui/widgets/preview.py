"""The preview pane: a title line, then an image or a scrollable renderable.

Images go through textual-image: terminal graphics (Sixel, Kitty's protocol) where the terminal
answers for them, coloured half-blocks otherwise, grey blocks when there is no terminal at all
(tests). The mode is chosen once, before the app takes the terminal (see `tui.commands`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from dropflow.tui.messages import PreviewLoaded
from dropflow.tui.preview import Preview, load_preview
from dropflow.tui.widgets.lists import VimScroll

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost

IMAGE_MODES = ("auto", "sixel", "tgp", "halfcell", "unicode", "off")


def image_widget(mode: str, image: Any) -> Widget | None:
    """A textual-image widget for a PIL image in `mode`; None when images are off or unavailable."""
    if mode == "off":
        return None
    try:
        from textual_image import widget as tiw
    except ImportError:
        return None
    classes: dict[str, Any] = {
        "auto": tiw.Image,
        "sixel": tiw.SixelImage,
        "tgp": tiw.TGPImage,
        "halfcell": tiw.HalfcellImage,
        "unicode": tiw.UnicodeImage,
    }
    return cast(Widget, classes[mode](image))


class PreviewPane(Vertical):
    DEFAULT_CSS = """
    PreviewPane { border-left: solid $panel-lighten-2; padding: 0 0 0 1; }
    PreviewPane > #preview-title { height: 1; text-style: bold; }
    PreviewPane > #preview-body { height: 1fr; }
    PreviewPane #preview-image { width: auto; height: auto; max-height: 100%; max-width: 100%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.path: Path | None = None
        self.current: Preview | None = None

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    def compose(self) -> ComposeResult:
        yield Static("select a file to preview it", id="preview-title")
        yield VimScroll(id="preview-body")

    def show_path(self, path: Path | None) -> None:
        """Preview `path` (read in a thread; the newest request wins)."""
        self.path = path
        if path is None:
            return
        self.query_one("#preview-title", Static).update(Text(f"{path.name} …", style="dim"))
        self._load(path)

    @work(thread=True, exclusive=True, group="preview", name="preview", exit_on_error=False)
    def _load(self, path: Path) -> None:
        preview = load_preview(path)
        self.post_message(PreviewLoaded(path, preview))

    async def on_preview_loaded(self, message: PreviewLoaded) -> None:
        message.stop()
        if message.path != self.path:
            return  # the cursor moved on while this one was read
        await self.show(message.preview)

    async def show(self, preview: Preview) -> None:
        self.current = preview
        self.query_one("#preview-title", Static).update(
            Text(preview.title, no_wrap=True, overflow="ellipsis")
        )
        body = self.query_one("#preview-body", VimScroll)
        await body.remove_children()
        if preview.kind == "image":
            widget = image_widget(self.dapp.images, preview.image)
            if widget is None:
                w, h = preview.image.size
                await body.mount(Static(Text(f"image previews are off ({w}x{h} thumbnail)", style="dim")))
            else:
                widget.id = "preview-image"
                await body.mount(widget)
        else:
            await body.mount(Static(preview.body, id="preview-text"))
        body.scroll_home(animate=False)

"""The folder tree: inbox and outputs as two top nodes, folders read lazily in thread workers,
top folders labelled with their counts (pending / failed / archived inputs, output files)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import NodeID, TreeNode, UnknownNodeID

from dropflow.tui import format as fmt
from dropflow.tui.folders import list_folder, top_labels
from dropflow.tui.messages import FolderCounted, FolderListed

if TYPE_CHECKING:
    from dropflow.tui.host import AppHost


class FolderTree(Tree[Path]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right,l", "open_node", "Open folder / into it", show=False),
        Binding("left,h", "close_node", "Close folder / to parent", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("j", "cursor_down", "Down", show=False),
    ]
    DEFAULT_CSS = """
    FolderTree { width: 50%; min-width: 28; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("folders", id=id)
        self.show_root = False
        self.auto_expand = True
        self.labels: dict[Path, str] = {}
        self._by_path: dict[Path, TreeNode[Path]] = {}
        self._loaded: set[int] = set()

    @property
    def dapp(self) -> AppHost:
        return cast("AppHost", self.app)

    def on_mount(self) -> None:
        paths = self.dapp.cfg.paths
        for name, path in (("inbox", paths.inbox), ("outputs", paths.outputs)):
            node = self.root.add(self._label(path, name, is_dir=True), data=path, allow_expand=True)
            self._by_path[path] = node
            node.expand()
        self.root.expand()
        self.count()

    # --- lazy listing ------------------------------------------------------------------------------

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Path]) -> None:
        node = event.node
        if node.data is not None and node.id not in self._loaded:
            self._loaded.add(node.id)
            self._list(node.id, node.data)

    @work(thread=True, group="folder-list", name="folder-list", exit_on_error=False)
    def _list(self, node_id: int, folder: Path) -> None:
        entries, more = list_folder(folder)
        self.post_message(FolderListed(node_id, entries, more))

    def on_folder_listed(self, message: FolderListed) -> None:
        """Merge a fresh listing into the node: kept children keep their expansion and the cursor."""
        message.stop()
        try:
            node = self.get_node_by_id(NodeID(message.node_id))
        except UnknownNodeID:  # the branch went away while it was read
            return
        existing = {child.data: child for child in node.children if child.data is not None}
        for child in list(node.children):
            if child.data is None:  # "(empty)" / "… more" notes are rebuilt below
                child.remove()
        wanted = {e.path for e in message.entries}
        for path, child in existing.items():
            if path not in wanted:
                self._forget(child)
                child.remove()
        for index, entry in enumerate(message.entries):
            label = self._label(entry.path, entry.path.name, is_dir=entry.is_dir, size=entry.size)
            kept = existing.get(entry.path)
            if kept is not None:
                kept.set_label(label)
                continue
            if entry.is_dir:
                added = node.add(label, data=entry.path, before=index, allow_expand=True)
            else:
                added = node.add_leaf(label, data=entry.path, before=index)
            self._by_path[entry.path] = added
        if message.more:
            node.add_leaf(Text(f"… {message.more} more", style="dim"))
        if not message.entries:
            node.add_leaf(Text("(empty)", style="dim"))

    def _forget(self, node: TreeNode[Path]) -> None:
        for child in node.children:
            self._forget(child)
        if node.data is not None:
            self._by_path.pop(node.data, None)
        self._loaded.discard(node.id)

    def reload(self) -> None:
        """Re-read every expanded folder and the counts (files appear and get archived)."""
        for path, node in list(self._by_path.items()):
            if node.is_expanded and node.id in self._loaded and node.data is not None:
                self._list(node.id, path)
        self.count()

    # --- counts --------------------------------------------------------------------------------------

    def count(self) -> None:
        self._count()

    @work(thread=True, exclusive=True, group="folder-count", name="folder-count", exit_on_error=False)
    def _count(self) -> None:
        self.post_message(FolderCounted(top_labels(self.dapp.cfg)))

    def on_folder_counted(self, message: FolderCounted) -> None:
        message.stop()
        self.labels = message.labels
        for path, node in self._by_path.items():
            if path in self.labels:
                node.set_label(self._label(path, self._display_name(path), is_dir=True))

    def _display_name(self, path: Path) -> str:
        paths = self.dapp.cfg.paths
        return {paths.inbox: "inbox", paths.outputs: "outputs"}.get(path, path.name)

    def _label(self, path: Path, name: str, *, is_dir: bool, size: int = 0) -> Text:
        text = Text(name + ("/" if is_dir else ""), style="bold" if is_dir else "")
        extra = self.labels.get(path)
        if extra:
            text.append(f"  {extra}", style="dim")
        elif not is_dir:
            text.append(f"  {fmt.size(size)}", style="dim")
        return text

    def action_open_node(self) -> None:
        node = self.cursor_node
        if node is None or not node.allow_expand:
            return
        if node.is_expanded:
            self.action_cursor_down()
        else:
            node.expand()

    def action_close_node(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.allow_expand:
            node.collapse()
        else:
            self.action_cursor_parent()

    @property
    def selected_path(self) -> Path | None:
        node = self.cursor_node
        return node.data if node is not None else None

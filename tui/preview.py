"""Previews for the folder browser and job outputs: images (and contact sheets), JSON, JSONL, text.

`load_preview` is blocking (file reads, image decode): call it from a thread worker. It reads a
bounded prefix of any file, decodes images through `engine.media.load_image` (EXIF orientation,
pixel cap against decompression bombs) and shrinks them before the terminal ever sees them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text

from dropflow.engine.errors import DropflowError, render
from dropflow.engine.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from dropflow.tui import format as fmt

MAX_TEXT_BYTES = 256 * 1024  # read at most this much of a text file
MAX_JSON_BYTES = 2 * 1024 * 1024  # parse a whole JSON document up to this size
MAX_JSONL_RECORDS = 40
THUMBNAIL_PX = 640  # longest side handed to the terminal renderer
TEXT_SUFFIXES = frozenset(
    {".txt", ".md", ".log", ".csv", ".tsv", ".yaml", ".yml", ".srt", ".vtt", ".py", ".toml"}
)

Kind = Literal["image", "text", "folder", "info", "error"]


@dataclass(frozen=True)
class Preview:
    """What to show: a title line, then an image (a PIL image) or a Rich renderable."""

    kind: Kind
    title: str
    body: RenderableType = ""
    image: Any = None  # PIL.Image.Image, already shrunk


def load_preview(path: Path) -> Preview:
    """Build the preview of a file or folder. Never raises for a bad file: the preview says why."""
    try:
        if path.is_dir():
            return _folder(path)
        if not path.exists():
            return Preview("error", path.name, Text(f"{path} no longer exists", style="red"))
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return _image(path)
        if suffix == ".json":
            return _json(path)
        if suffix == ".jsonl":
            return _jsonl(path)
        if suffix in TEXT_SUFFIXES:
            return _text(path)
        return _info(path)
    except DropflowError as exc:
        return Preview("error", path.name, Text(render(exc), style="red"))
    except OSError as exc:
        return Preview("error", path.name, Text(f"cannot read {path}: {exc.strerror or exc}", style="red"))


def _title(path: Path, extra: str = "") -> str:
    try:
        size = fmt.size(path.stat().st_size)
    except OSError:
        size = "?"
    return f"{path.name} · {size}" + (f" · {extra}" if extra else "")


def _image(path: Path, note: str = "") -> Preview:
    from dropflow.engine.media import load_image

    image = load_image(path)
    w, h = image.size
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return Preview("image", _title(path, f"{w}x{h}" + (f" · {note}" if note else "")), image=image)


def _read_prefix(path: Path, limit: int) -> tuple[str, bool]:
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    cut = len(data) > limit
    return data[:limit].decode("utf-8", errors="replace"), cut


def _json(path: Path) -> Preview:
    text, cut = _read_prefix(path, MAX_JSON_BYTES)
    if cut:
        return _text(path, note="too large to format; the start as text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        body = Group(Text(f"not valid JSON: {exc}", style="red"), Text(text[:MAX_TEXT_BYTES]))
        return Preview("text", _title(path, "invalid JSON"), body)
    pretty = json.dumps(data, indent=2, ensure_ascii=False)
    if len(pretty) > MAX_TEXT_BYTES:
        pretty = pretty[:MAX_TEXT_BYTES] + "\n…"
    return Preview("text", _title(path, _shape(data)), _syntax(pretty))


def _shape(data: Any) -> str:
    if isinstance(data, dict):
        return f"object, {len(data)} keys"
    if isinstance(data, list):
        return f"array of {len(data)}"
    return type(data).__name__


def _jsonl(path: Path) -> Preview:
    text, cut = _read_prefix(path, MAX_TEXT_BYTES)
    lines = text.splitlines()
    if cut and lines:
        lines.pop()  # the last line may be cut in the middle
    parts: list[RenderableType] = []
    shown = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if shown == MAX_JSONL_RECORDS:
            break
        shown += 1
        parts.append(Text(f"── record {number} ", style="bold dim"))
        try:
            parts.append(_syntax(json.dumps(json.loads(line), indent=2, ensure_ascii=False)))
        except json.JSONDecodeError as exc:
            parts.append(Text(f"not valid JSON ({exc.msg}): {line[:500]}", style="red"))
    more = " · more records follow" if cut or shown < sum(1 for x in lines if x.strip()) else ""
    return Preview("text", _title(path, f"first {shown} records{more}"), Group(*parts))


def _text(path: Path, note: str = "") -> Preview:
    text, cut = _read_prefix(path, MAX_TEXT_BYTES)
    extra = note or ("the first 256 KB" if cut else "")
    return Preview("text", _title(path, extra), Text(text))


def _syntax(code: str) -> Syntax:
    return Syntax(code, "json", word_wrap=True, background_color="default", theme="ansi_dark")


def _info(path: Path) -> Preview:
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS and _looks_like_text(path):
        return _text(path)
    what = "video" if suffix in VIDEO_EXTENSIONS else "binary file"
    body = Text(f"{what} {path.name}\n{path.parent}", style="dim")
    return Preview("info", _title(path, what), body)


def _looks_like_text(path: Path) -> bool:
    """UTF-8 without NUL bytes in the first 4 KB (a `.out`, a `.srt` under another name, ...)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # only a character cut at the 4 KB boundary
    return True


def _folder(path: Path) -> Preview:
    from dropflow.tui.folders import list_folder

    entries, more = list_folder(path, limit=200)
    sheet = next(
        (
            e.path
            for e in entries
            if not e.is_dir and e.path.suffix.lower() in IMAGE_EXTENSIONS and "contact" in e.path.stem.lower()
        ),
        None,
    )
    if sheet is not None:
        return _image(sheet, note=f"contact sheet of {path.name}/")
    dirs = sum(1 for e in entries if e.is_dir)
    files = len(entries) - dirs
    lines = Text()
    for e in entries[:40]:
        lines.append(
            ("▸ " if e.is_dir else "  ") + e.path.name + ("/" if e.is_dir else ""),
            style="bold" if e.is_dir else "",
        )
        if not e.is_dir:
            lines.append(f"  {fmt.size(e.size)}", style="dim")
        lines.append("\n")
    if len(entries) > 40 or more:
        lines.append(f"… {len(entries) - 40 + more} more", style="dim")
    title = f"{path.name}/ · {dirs} folders · {files}{'+' if more else ''} files"
    return Preview("folder", title, lines)

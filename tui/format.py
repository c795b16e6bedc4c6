"""Small text formatters shared by the screens: ages, token counts, progress bars, paths.

Pure functions with no Textual import (only Rich's cell widths), so they are cheap to test.
"""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len, get_character_cell_size, set_cell_size

from dropflow.daemon.core.jobs import TERMINAL

_EIGHTHS = " ▏▎▍▌▋▊▉"


def age(seconds: float) -> str:
    """A compact age: 42s, 5m, 3h, 2d."""
    s = max(0, int(seconds))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def duration(seconds: float) -> str:
    """An uptime: 45s, 12m, 3h05m, 2d04h."""
    s = max(0, int(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m"
    return f"{sec}s"


def count(n: int) -> str:
    """A human count: 999, 1.2k, 34k, 5.6M (empty for zero: a quiet column)."""
    if n <= 0:
        return ""
    if n < 1000:
        return str(n)
    for unit, div in (("M", 1_000_000), ("k", 1000)):
        if n >= div:
            value = n / div
            return f"{value:.1f}{unit}" if value < 10 else f"{int(value)}{unit}"
    return str(n)  # pragma: no cover - unreachable


def bar(fraction: float, width: int) -> str:
    """A progress bar `width` cells wide, in eighths of a cell."""
    if width <= 0:
        return ""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return text.ljust(width)


def shown_progress(status: str, progress: float, message: str) -> tuple[float | None, str]:
    """A job's progress as the screens show it: (fraction for the bar, None for no bar; message).

    Running work reports as it goes; a finished job shows its outcome instead. A succeeded job: a
    full bar and the message its engine finished with (written with the result, never stale). A
    failed or cancelled one: neither, because the store keeps whatever its last run reported
    ("segment 3/5", 60%) and a cancel or failure does not clear it.
    """
    if status == "succeeded":
        return 1.0, message
    if status in TERMINAL:
        return None, ""
    return progress, message


def fit(text: str, width: int, *, keep_end: bool = True) -> str:
    """Cut `text` to at most `width` terminal cells with an ellipsis (at the start when the end
    matters, as in paths). Wide characters (CJK file names) count as two cells."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    if width == 1:
        return "…"
    chars = reversed(text) if keep_end else iter(text)
    kept: list[str] = []
    used = 0
    for ch in chars:
        w = get_character_cell_size(ch)
        if used + w > width - 1:
            break
        kept.append(ch)
        used += w
    return "…" + "".join(reversed(kept)) if keep_end else "".join(kept) + "…"


def cell(text: str, width: int, *, right: bool = False, keep_end: bool = False) -> str:
    """`text` cut or padded to exactly `width` cells (a table cell)."""
    text = fit(text, width, keep_end=keep_end)
    if right:
        return " " * (width - cell_len(text)) + text
    return set_cell_size(text, width)


def display_path(path: str, root: Path | None) -> str:
    """A path relative to the project folder when it lies inside it, else with ~ for home."""
    p = Path(path)
    if root is not None:
        try:
            return str(p.relative_to(root))
        except ValueError:
            pass
    try:
        return "~/" + str(p.relative_to(Path.home()))
    except ValueError:
        return path


def size(n: int) -> str:
    """A byte size: 512 B, 3.4 KB, 12 MB."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - unreachable

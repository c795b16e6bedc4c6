"""The train/validation split: decided once per item and remembered, so an item never moves.

A hash threshold (the earlier design) is stable but leaves the validation split empty for small
datasets, and a training config naming `<name>_val` then fails. Here every item without a split
yet is assigned, in the order items were added, so that the validation count stays as close to
`val_ratio` of the items as the count allows, with at least one item once there are two. The
assignment is stored in `.records/split/assigned.json` by each daemon render (one at a time per
dataset); items already there keep their side. A changed `val_ratio` draws the split again
(items move once, on purpose); an export with another ratio renders a fresh draw without storing it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from dropflow.engine import files

Split = Literal["train", "validation"]
SPLIT_FILE = ".records/split/assigned.json"

log = logging.getLogger("dropflow.engine.dataset.split")


def val_target(items: int, val_ratio: float) -> int:
    """How many of `items` belong in validation: round(items × ratio), at least 1 from 2 items on,
    never all of them."""
    if val_ratio <= 0 or items < 2:
        return 0
    return min(items - 1, max(1, round(items * val_ratio)))


def assign(
    hashes: Sequence[str], val_ratio: float, known: Mapping[str, Split] | None = None
) -> dict[str, Split]:
    """The split of each of `hashes` (in the order the items were added).

    Items in `known` keep their split; the others are assigned in order, each to validation while
    the validation count is below the target for the items seen so far.
    """
    known = known or {}
    if val_ratio <= 0:
        return dict.fromkeys(hashes, "train")
    present = [h for h in hashes if h in known]
    val = sum(1 for h in present if known[h] == "validation")
    seen = len(present)
    out: dict[str, Split] = {}
    for h in hashes:
        if h in known:
            out[h] = known[h]
            continue
        seen += 1
        if val < val_target(seen, val_ratio):
            out[h] = "validation"
            val += 1
        else:
            out[h] = "train"
    return out


def load(root: Path) -> tuple[float | None, dict[str, Split]]:
    """The stored assignment and the ratio it was drawn for ((None, {}) when none or damaged)."""
    path = root / SPLIT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring damaged split file %s (the split is drawn again): %s", path, exc)
        return None, {}
    items = data.get("items") if isinstance(data, dict) else None
    ratio = data.get("val_ratio") if isinstance(data, dict) else None
    if not isinstance(items, dict) or not isinstance(ratio, int | float):
        return None, {}
    return float(ratio), {h: s for h, s in items.items() if s in ("train", "validation")}


def save(root: Path, val_ratio: float, splits: Mapping[str, Split]) -> None:
    """Raises OSError when the file cannot be written."""
    files.write_json(root / SPLIT_FILE, {"val_ratio": val_ratio, "items": dict(splits)})

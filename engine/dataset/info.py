"""LLaMA-Factory's `dataset_info.json`: our entries merged into whatever the file already holds.

Users register their own datasets in the same file (LLaMA-Factory reads one per `dataset_dir`),
and several dropflow datasets share it, so a render must never write the file from scratch: it
updates its own keys, drops its own keys that no longer apply (`<name>_val` after `val_ratio`
went back to 0) and keeps every other key as it was. A file that is not a JSON object is not
ours to fix: it is renamed aside (`dataset_info.json.corrupt-<time>`) with a warning, so that
nothing the user wrote is lost, and a fresh file is written.

One daemon renders the datasets of an outputs folder, possibly several at once from worker
threads: the read-merge-write is serialised by a lock. (A `dropflow dataset export` run at the
same moment from another process could still lose the other's update until the next render.)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dropflow.engine import files

log = logging.getLogger("dropflow.engine.dataset.info")

INFO_FILE = "dataset_info.json"
_LOCK = threading.Lock()


def read_info(path: Path) -> dict[str, Any]:
    """The file's entries ({} when missing). A damaged file is moved aside with a warning."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    log.warning("%s is not a JSON object: moved aside to %s, writing a fresh one", path, aside.name)
    return {}


def merge_info(path: Path, ours: Mapping[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    """Write `ours` into the file at `path`, removing the keys in `drop`; other keys stay as they are.

    Returns what was written. Raises OSError when the file cannot be read or written.
    """
    with _LOCK:
        current = read_info(path)
        merged = {k: v for k, v in current.items() if k not in set(drop)}
        merged.update(ours)
        if merged != current or not path.exists():
            files.write_text(path, json.dumps(merged, ensure_ascii=False, indent=2) + "\n")
        return merged

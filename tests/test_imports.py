"""Import hygiene: the core never imports the TUI or heavy libraries at start."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import subprocess_env

HEAVY = [
    "textual",
    "cv2",
    "onnxruntime",
    "insightface",
    "hdbscan",
    "fast_hdbscan",
    "numba",
    "sklearn",
    "torch",
]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=subprocess_env(), check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_imports_without_textual_or_heavy_libraries() -> None:
    mods = _modules_after(
        "import dropflow.daemon.cli, dropflow.daemon.daemon, dropflow.daemon.core.store.sqlite, dropflow.daemon.scheduler,"
        " dropflow.daemon.watcher, dropflow.engine.registry, dropflow.engine.providers"
    )
    loaded = sorted(m for m in HEAVY if m in mods)
    assert loaded == [], f"imported at start: {loaded}"


def test_cli_help_is_light() -> None:
    mods = _modules_after("from dropflow.daemon.cli import build_parser\nbuild_parser()")
    assert "textual" not in mods and "cv2" not in mods


def test_bare_top_level_names_are_not_importable() -> None:
    code = "import importlib.util as u; print([n for n in ('daemon','engine','tui') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"

"""The layers of the house (DESIGN.md "Layout"): an import never goes up.

    0  contracts and shared values   engine.{errors,files,media,frames,answer_cache,base,registry,
                                     providers.base},
                                     daemon.core.{config,jobs,persons}
    1  store implementations         daemon.core.store
    2  providers and engines         engine.providers.*, engine.fakes, engine.{annotate,dataset,videogen,cluster}
    3  daemon runtime                daemon.{watcher,intake,router,scheduler,daemon,logs}
    4  CLI and TUI                   daemon.cli, daemon.__main__, tui

Every import counts: module level, inside functions (lazy) and under TYPE_CHECKING, because a
type-only import going up is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"daemon": "dropflow.daemon", "engine": "dropflow.engine", "tui": "dropflow.tui"}
ENGINES = ("annotate", "dataset", "videogen", "cluster")

# most specific prefix first wins
LAYERS: list[tuple[str, int]] = [
    ("dropflow.engine.providers.base", 0),
    ("dropflow.engine.errors", 0),
    ("dropflow.engine.files", 0),
    ("dropflow.engine.media", 0),
    ("dropflow.engine.frames", 0),  # video sampling: annotate's frames and video datasets'
    ("dropflow.engine.answer_cache", 0),  # answers kept by request: annotate and video datasets
    ("dropflow.engine.base", 0),
    ("dropflow.engine.registry", 0),
    ("dropflow.daemon.core.store", 1),
    ("dropflow.daemon.core", 0),
    ("dropflow.engine.providers", 2),
    ("dropflow.engine.fakes", 2),
    *((f"dropflow.engine.{e}", 2) for e in ENGINES),
    ("dropflow.daemon.cli", 4),
    ("dropflow.daemon.__main__", 4),
    ("dropflow.tui", 4),
    ("dropflow.daemon", 3),
]
PACKAGE_ROOTS = {"dropflow.daemon": 0, "dropflow.engine": 0}  # their __init__ hold only a docstring / version


def layer(module: str) -> int:
    if module in PACKAGE_ROOTS:
        return PACKAGE_ROOTS[module]
    for prefix, n in sorted(LAYERS, key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return n
    raise AssertionError(f"{module} has no layer: add it to LAYERS (and to DESIGN.md)")


def modules() -> dict[str, Path]:
    found = {}
    for folder, root in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([root, *parts])] = path
    return found


def imports(path: Path, module: str) -> set[str]:
    """Every dropflow module `path` imports, resolved (`from x import y` counts y when y is a module)."""
    known = modules()
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dropflow."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("dropflow"):
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {m for m in out if m in known or m in PACKAGE_ROOTS}


MODULES = modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up_a_layer(module: str) -> None:
    own = layer(module)
    upward = sorted(m for m in imports(MODULES[module], module) if layer(m) > own)
    assert upward == [], f"{module} (layer {own}) imports a higher layer: {upward}"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_engine_package_imports_no_other_engine(engine: str) -> None:
    """Shared pieces live in the shared modules, not in another engine's package."""
    own = f"dropflow.engine.{engine}"
    others = tuple(f"dropflow.engine.{e}" for e in ENGINES if e != engine)
    for module, path in MODULES.items():
        if module == own or module.startswith(own + "."):
            bad = sorted(m for m in imports(path, module) if m.startswith(others))
            assert bad == [], f"{module} imports another engine's package: {bad}"


def test_tui_parts_do_not_import_the_app_back() -> None:
    """Screens, widgets and helpers reach the app through `tui.host.AppHost`, never `tui.app`."""
    top = {"dropflow.tui.app", "dropflow.tui.commands"}
    for module, path in MODULES.items():
        if module.startswith("dropflow.tui") and module not in top:
            assert "dropflow.tui.app" not in imports(path, module), f"{module} imports dropflow.tui.app"


def test_the_rule_itself_sees_an_upward_import(tmp_path: Path) -> None:
    """The walker is not blind: a lazy import of the scheduler from an engine is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from dropflow.daemon.scheduler import Scheduler\n")
    found = imports(probe, "dropflow.engine.annotate.probe")
    assert "dropflow.daemon.scheduler" in found
    assert layer("dropflow.daemon.scheduler") > layer("dropflow.engine.annotate.probe")


def test_the_app_has_what_its_parts_ask_of_it() -> None:
    """`AppHost` is what screens and widgets may use; `DropflowApp` must have every method of it."""
    import inspect

    from dropflow.tui.app import DropflowApp
    from dropflow.tui.host import AppHost

    methods = [n for n, v in vars(AppHost).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert "edit_job" in methods
    missing = [n for n in methods if not callable(getattr(DropflowApp, n, None))]
    assert missing == []

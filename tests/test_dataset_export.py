"""Offline placeholders stay visible in every format, and `dropflow dataset export` rewrites only
the format it is asked for (issue 12)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dropflow.daemon.cli import main as cli_main
from dropflow.daemon.core import config as config_mod
from dropflow.daemon.core.config import Config
from dropflow.engine.dataset.folder import FAILED, SUMMARY, DatasetFolder
from dropflow.engine.dataset.formats import FORMAT_NAMES, OFFLINE_MARKER, RenderOptions, check_sharegpt
from tests.conftest import subprocess_env
from tests.test_dataset_formats import build, read_jsonl

ALL = list(FORMAT_NAMES)
MIXED = [True, False, True]  # items 0 and 2 by the offline provider, item 1 by a model


def project(root: Path) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(
        "paths: {inbox: inbox, outputs: outputs, archive: archive, prompts: prompts, state: state}\n"
    )
    return config_mod.load(root / "config.yaml")


def dataset(cfg: Config, offline: bool | list[bool] = MIXED) -> DatasetFolder:
    return build(
        cfg.paths.outputs / "dataset", len(offline) if isinstance(offline, list) else 3, offline=offline
    )


def cli(cfg: Config, *args: str) -> int:
    return cli_main(["--config", str(cfg.source), "dataset", *args])


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every rendered file (and imagefolder link) but summary.json, with its bytes and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != SUMMARY and not rel.startswith((".records/", "images/")):
            out[rel] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


# --- offline placeholders ----------------------------------------------------------------------------


def test_offline_rows_are_marked_in_every_format_and_kept_out_of_openai(tmp_path: Path) -> None:
    folder = build(tmp_path, 3, offline=MIXED)
    offline = {r.hash: r.offline for r in folder.records()}
    by_image = {r.image: r.offline for r in folder.records()}
    summary = folder.render(ALL, RenderOptions("pets", folder.root)).summary

    for name in ("train.jsonl", "swift_train.jsonl"):
        rows = read_jsonl(folder.root / name)
        assert len(rows) == 3
        for row in rows:
            assert check_sharegpt(row) == []
            stored = row["images"][0].removeprefix("pets/")
            assert row[OFFLINE_MARKER] is by_image[stored], name
    for item in json.loads((folder.root / "llava_train.json").read_text()):
        assert item[OFFLINE_MARKER] is by_image[item["image"].removeprefix("pets/")]
    for row in read_jsonl(folder.root / "qwen_train.jsonl"):
        image = row["messages"][-2]["content"][0]["image"]
        assert row[OFFLINE_MARKER] is by_image[image.removeprefix("pets/")]
    for row in read_jsonl(folder.root / "imagefolder" / "train" / "metadata.jsonl"):
        assert row[OFFLINE_MARKER] is by_image[row["file_name"]]

    # OpenAI refuses keys it does not know: the placeholders are left out rather than unmarked
    [row] = read_jsonl(folder.root / "openai_train.jsonl")
    assert set(row) == {"messages"} and "placeholder" not in row["messages"][-1]["content"]
    assert summary["offline_items"] == 2 == sum(offline.values())
    assert summary["offline_left_out"] == {"openai": 2}
    assert "openai" not in summary["skipped"]

    asked = folder.render(["openai"], RenderOptions("pets", folder.root, offline_in_openai=True)).summary
    rows = read_jsonl(folder.root / "openai_train.jsonl")
    assert len(rows) == 3 and all(set(r) == {"messages"} for r in rows)
    assert asked["offline_left_out"] == {} and asked["offline_items"] == 2


def test_a_dataset_of_model_answers_carries_no_marker(tmp_path: Path) -> None:
    folder = build(tmp_path, 3, offline=False)
    summary = folder.render(ALL, RenderOptions("pets", folder.root)).summary
    assert summary["offline_items"] == 0 and summary["offline_left_out"] == {}
    for name in (
        "train.jsonl",
        "swift_train.jsonl",
        "openai_train.jsonl",
        "qwen_train.jsonl",
        "imagefolder/train/metadata.jsonl",
    ):
        rows = read_jsonl(folder.root / name)
        assert len(rows) == 3 and all(OFFLINE_MARKER not in r for r in rows), name
    assert all(OFFLINE_MARKER not in i for i in json.loads((folder.root / "llava_train.json").read_text()))


def test_show_and_export_say_how_many_items_are_placeholders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = project(tmp_path / "proj")
    folder = dataset(cfg)
    assert cli(cfg, "export", "pets", "-f", "openai") == 0
    out = capsys.readouterr().out
    assert "2 of 3 item(s) hold the offline provider's placeholder" in out and OFFLINE_MARKER in out
    assert "left out of openai: 2" in out and "--include-offline" in out
    assert len(read_jsonl(folder.root / "openai_train.jsonl")) == 1

    assert cli(cfg, "show", "pets") == 0
    out = capsys.readouterr().out
    assert "2 of 3 item(s)" in out and "left out of openai: 2" in out

    assert cli(cfg, "export", "pets", "-f", "openai", "--include-offline") == 0
    out = capsys.readouterr().out
    assert "in openai unmarked" in out and "left out" not in out
    assert len(read_jsonl(folder.root / "openai_train.jsonl")) == 3


# --- export rewrites what it is asked for ----------------------------------------------------------


def test_export_rewrites_only_the_format_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = project(tmp_path / "proj")
    folder = dataset(cfg, offline=[True, False, True, False, True, False])
    # what the daemon left: four formats, and an openai item left out for its size
    big = folder.root / sorted(folder.records(), key=lambda r: r.created)[1].image
    big.write_bytes(big.read_bytes() + b"\0" * (10 * 1024 * 1024 + 1))
    options = RenderOptions("pets", folder.root, val_ratio=0.25)
    before = folder.render(["llamafactory", "llava", "openai", "imagefolder"], options).summary
    assert before["skipped"]["openai"] and before.get("offline_left_out") == {"openai": 3}
    for path in folder.root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    kept = snapshot(folder.root)
    assert "train.jsonl" in kept and "imagefolder/train/metadata.jsonl" in kept

    assert cli(cfg, "export", "pets", "-f", "swift") == 0
    out = capsys.readouterr().out
    assert "swift:" in out and "llava:" not in out and "also rewrote" not in out

    after = snapshot(folder.root)
    assert {k: v for k, v in after.items() if not k.startswith("swift_")} == kept
    assert (
        len(read_jsonl(folder.root / "swift_train.jsonl")) + len(read_jsonl(folder.root / "swift_val.jsonl"))
        == 6
    )
    summary = folder.summary()
    assert summary is not None
    assert summary["format"] == ["llamafactory", "swift", "llava", "openai", "imagefolder"]
    for key in ("files", "skipped", "offline_left_out"):
        for fmt, said in before.get(key, {}).items():
            assert summary[key][fmt] == said, (key, fmt)
    assert summary["files"]["swift"] == ["swift_train.jsonl", "swift_val.jsonl"]
    assert folder.kept_formats() == summary["format"]  # the daemon keeps all five fresh from now on


def test_export_that_changes_the_split_rewrites_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = project(tmp_path / "proj")
    folder = dataset(cfg)
    folder.render(["llamafactory", "llava"], RenderOptions("pets", folder.root))
    for path in folder.root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    kept = snapshot(folder.root)

    assert cli(cfg, "export", "pets", "-f", "swift", "--val-ratio", "0.5") == 0
    assert "also rewrote llamafactory, llava" in capsys.readouterr().out
    after = snapshot(folder.root)
    assert after["train.jsonl"][1] != kept["train.jsonl"][1]
    assert after["llava_train.json"][1] != kept["llava_train.json"][1]
    assert folder.summary() is not None and folder.summary()["val_ratio"] == 0.5  # type: ignore[index]


# --- tidy ------------------------------------------------------------------------------------------


def test_dataset_commands_do_not_load_the_engine(tmp_path: Path) -> None:
    cfg = project(tmp_path / "proj")
    dataset(cfg)
    probe = (
        "import sys\n"
        "from dropflow.daemon.cli import main\n"
        f"for cmd in (['list'], ['show', 'pets']):\n"
        f"    assert main(['--config', {str(cfg.source)!r}, 'dataset', *cmd]) == 0\n"
        "print('LOADED' if 'dropflow.engine.dataset.engine' in sys.modules else 'LIGHT')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=subprocess_env(), check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "LIGHT"


def test_the_folder_logs_under_its_own_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = build(tmp_path, 1)
    (folder.root / FAILED).mkdir(parents=True)
    (folder.root / FAILED / f"{'e' * 64}.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert folder.failures() == []
    assert [r.name for r in caplog.records] == ["dropflow.engine.dataset.folder"]

"""The `dropflow` CLI, called in-process through `main(argv)` on a real project folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropflow.daemon.cli import EXIT_CONFIG, EXIT_MISSING, EXIT_OK, EXIT_STATE, EXIT_USAGE, main
from tests.conftest import write_config


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "p")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_writes_a_working_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "init", str(tmp_path / "proj"))
    assert code == EXIT_OK
    root = tmp_path / "proj"
    for sub in ("annotate", "dataset", "video-gen", "cluster"):
        assert (root / "inbox" / sub / "README.md").is_file()
        assert (root / "outputs" / sub).is_dir()
    assert (root / "prompts" / "pov_annotation_prompt.txt").is_file()
    # relative paths in the written config resolve against its folder, wherever we run from
    code, out, _ = run(capsys, "--config", str(root / "config.yaml"), "config", "show")
    assert code == EXIT_OK
    assert f"inbox: {root / 'inbox'}" in out
    code, out, _ = run(capsys, "init", str(root))
    assert "kept it" in out


def test_submit_jobs_json_and_job(cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "elsewhere.txt"
    src.write_text("in place")
    code, out, _ = run(
        capsys,
        "--config",
        str(cfg_path),
        "submit",
        str(src),
        "--engine",
        "record",
        "--set",
        "seconds=0.5",
        "--set",
        "note=hi there",
    )
    assert code == EXIT_OK and "job 1: queued" in out
    # the same content with the same params: the dedupe key includes the params
    code, out, _ = run(
        capsys,
        "--config",
        str(cfg_path),
        "submit",
        str(src),
        "--engine",
        "record",
        "--set",
        "seconds=0.5",
        "--set",
        "note=hi there",
    )
    assert code == EXIT_STATE, "a true duplicate is not success"
    assert "already has this content with these params" in out and "--force" in out
    # other params are other work
    code, out, _ = run(capsys, "--config", str(cfg_path), "submit", str(src), "--engine", "record")
    assert code == EXIT_OK and "job 2: queued" in out
    code, out, _ = run(capsys, "--config", str(cfg_path), "submit", str(src), "--engine", "record", "--force")
    assert "job 3: queued" in out

    code, out, _ = run(capsys, "--config", str(cfg_path), "jobs", "--json")
    jobs = json.loads(out)
    assert [j["id"] for j in jobs] == [1, 2, 3]
    first = jobs[0]
    assert {"id", "engine", "status", "input", "progress", "outputs", "error"} <= set(first)
    assert first["status"] == "queued" and first["input"] == str(src) and first["error"] is None
    assert first["params"]["seconds"] == 0.5 and first["params"]["note"] == "hi there"
    assert first["source"] == "submit"

    code, out, _ = run(capsys, "--config", str(cfg_path), "job", "1")
    assert code == EXIT_OK and "queued" in out and str(src) in out
    code, _, _ = run(capsys, "--config", str(cfg_path), "job", "99")
    assert code == EXIT_MISSING


def test_unknown_param_is_a_config_error_naming_the_key(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "x.txt"
    src.write_text("x")
    code, _, err = run(
        capsys, "--config", str(cfg_path), "submit", str(src), "--engine", "record", "--set", "colour=red"
    )
    assert code == EXIT_CONFIG
    assert "params.colour" in err and "seconds" in err  # names the key and lists the known ones


def test_edits_and_their_exit_codes(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "y.txt"
    src.write_text("y")
    run(capsys, "--config", str(cfg_path), "submit", str(src), "--engine", "record")
    assert run(capsys, "--config", str(cfg_path), "retry", "1")[0] == EXIT_STATE  # queued: nothing to retry
    assert run(capsys, "--config", str(cfg_path), "pause", "1")[0] == EXIT_OK
    assert run(capsys, "--config", str(cfg_path), "resume", "1")[0] == EXIT_OK
    assert run(capsys, "--config", str(cfg_path), "priority", "1", "5")[0] == EXIT_OK
    assert run(capsys, "--config", str(cfg_path), "cancel", "1")[0] == EXIT_OK
    assert run(capsys, "--config", str(cfg_path), "retry", "1")[0] == EXIT_OK
    assert run(capsys, "--config", str(cfg_path), "cancel", "42")[0] == EXIT_MISSING
    code, out, _ = run(capsys, "--config", str(cfg_path), "jobs", "--json", "--status", "queued")
    [job] = json.loads(out)
    assert job["priority"] == 5
    code, out, _ = run(capsys, "--config", str(cfg_path), "pause", "--engine", "record")
    assert code == EXIT_OK and "paused engine record" in out
    assert run(capsys, "--config", str(cfg_path), "pause")[0] == 2


def test_config_check_shows_routes_and_where_inbox_files_go(
    cfg_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inbox = cfg_path.parent / "inbox" / "record"
    (inbox / "a.txt").write_text("a")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "b.txt").write_text("b")
    (inbox / "c.jpg").write_bytes(b"not routed: the record engine takes .txt/.dat/.bin")
    code, out, _ = run(capsys, "--config", str(cfg_path), "config", "check")
    assert code == EXIT_OK, out
    assert "record" in out and "ROUTE" in out
    assert "a.txt  -> record (record)" in out
    assert "sub/b.txt  -> record (record) batch sub" in out
    assert "c.jpg" not in out
    (inbox / "sub" / "dropflow.yaml").write_text("params:\n  bogus: 1\n")
    code, out, _ = run(capsys, "--config", str(cfg_path), "config", "check")
    assert code == EXIT_CONFIG and "INVALID" in out and "dropflow.yaml:2" in out


def test_config_errors_exit_3_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("watch:\n  settle: 3\n")
    code, _, err = run(capsys, "--config", str(bad), "jobs")
    assert code == EXIT_CONFIG and "config.yaml:2: watch.settle" in err
    code, _, err = run(capsys, "--config", str(tmp_path / "missing.yaml"), "jobs")
    assert code == EXIT_CONFIG and "dropflow init" in err


def test_dropflow_config_env_var(
    cfg_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DROPFLOW_CONFIG", str(cfg_path))
    code, out, _ = run(capsys, "jobs")
    assert code == EXIT_OK and "no jobs" in out


def test_a_bad_set_is_blamed_on_the_command_line(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "talk.txt"
    src.write_text("x")
    code, _, err = run(
        capsys, "--config", str(cfg_path), "submit", str(src), "--engine", "record", "--set", "fsp=2"
    )
    assert code == EXIT_CONFIG
    assert "the command line (--set fsp=2)" in err and "config.yaml" not in err.split("fix:")[0]


def test_pausing_an_unknown_engine_is_an_error(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(cfg_path), "pause", "--engine", "nope")
    assert code == EXIT_USAGE and "unknown engine 'nope'" in err and "record" in err
    code, out, _ = run(capsys, "--config", str(cfg_path), "pause", "--engine", "record")
    assert code == EXIT_OK and "paused engine record" in out


def test_config_is_accepted_after_the_command(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here: only the option can find it
    code, out, _ = run(capsys, "jobs", "--config", str(cfg_path), "--json")
    assert code == EXIT_OK and json.loads(out) == []
    code, out, _ = run(capsys, "dataset", "list", "--config", str(cfg_path))
    assert code == EXIT_OK
    code, _, _ = run(capsys, "jobs", "--json")
    assert code == EXIT_CONFIG, "without it, the default still applies"


def test_submit_does_not_read_through_a_link_out_of_its_folder(
    cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    (folder / "x.txt").symlink_to(secret)
    code, _, err = run(capsys, "--config", str(cfg_path), "submit", str(folder), "--engine", "record")
    assert code != EXIT_OK and str(folder / "x.txt") in err and str(secret) in err
    code, _, err = run(
        capsys, "--config", str(cfg_path), "submit", str(folder / "x.txt"), "--engine", "record"
    )
    assert code != EXIT_OK and "outside the inbox" in err
    (folder / "x.txt").unlink()
    (folder / "y.txt").symlink_to(folder / "ok.txt")  # a link within the submitted folder is fine
    code, out, _ = run(capsys, "--config", str(cfg_path), "submit", str(folder), "--engine", "record")
    assert code == EXIT_OK and "queued" in out

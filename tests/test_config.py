"""Config: validation names file, key path and line; env interpolation; redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropflow.daemon.core import config as cfgmod
from dropflow.engine.errors import ConfigError


def _load(tmp_path: Path, text: str) -> cfgmod.Config:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return cfgmod.load(p)


def test_unknown_key_names_file_key_path_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "watch:\n  settle_seconds: 1\n  setle_secnds: 2\n")
    assert f"{tmp_path / 'config.yaml'}:3: watch.setle_secnds: unknown key" in err.value.message


def test_wrong_type_deep_in_a_list_points_at_its_line(tmp_path: Path) -> None:
    text = "routes:\n  - name: a\n    folder: a\n    engine: annotate\n  - name: b\n    folder: b\n    engine: dataset\n    priority: high\n"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert ":8: routes.1.priority:" in err.value.message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "watch:\n  settle_seconds: [1\n")
    assert "config.yaml:" in err.value.message and "not valid YAML" in err.value.message


def test_route_folder_cannot_escape_the_inbox(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "routes:\n  - {name: x, folder: ../etc, engine: annotate}\n")
    assert "routes.0.folder" in err.value.message


def test_duplicate_route_names_rejected(tmp_path: Path) -> None:
    text = "routes:\n  - {name: x, folder: a, engine: annotate}\n  - {name: x, folder: b, engine: dataset}\n"
    with pytest.raises(ConfigError, match="used twice"):
        _load(tmp_path, text)


def test_env_interpolation_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DS_KEY", "sk-abcdef123456")
    monkeypatch.delenv("UNSET_URL", raising=False)
    cfg = _load(
        tmp_path,
        "providers:\n  dashscope:\n    api_key: ${MY_DS_KEY}\n    base_url: ${UNSET_URL:-http://127.0.0.1:9/api/v1}\n",
    )
    assert cfg.providers.dashscope.key() == "sk-abcdef123456"
    assert cfg.providers.dashscope.base_url == "http://127.0.0.1:9/api/v1"
    assert cfg.secrets() == ["sk-abcdef123456"]


def test_unset_key_means_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    cfg = _load(tmp_path, "providers:\n  dashscope:\n    api_key: ${NOPE_KEY}\n")
    assert cfg.providers.dashscope.key() is None


def test_key_file_and_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ds").write_text("sk-fromfile-999\n")
    cfg = _load(tmp_path, "paths: {inbox: in}\nproviders:\n  dashscope: {api_key_file: keys/ds}\n")
    assert cfg.paths.inbox == tmp_path / "in"
    assert cfg.paths.database == tmp_path / ".dropflow" / "dropflow.db"
    assert cfg.providers.dashscope.key() == "sk-fromfile-999"


def test_redacted_dump_hides_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DS_KEY", "sk-secret-value-42")
    cfg = _load(tmp_path, "providers:\n  dashscope:\n    api_key: ${MY_DS_KEY}\n")
    out = cfgmod.redacted_dump(cfg)
    assert "sk-secret-value-42" not in out
    assert "redacted" in out


def test_repo_config_is_valid() -> None:
    repo = Path(__file__).resolve().parent.parent
    cfg = cfgmod.load(repo / "config.yaml")
    assert [r.engine for r in cfg.routes] == ["annotate", "dataset", "video-gen", "cluster"]

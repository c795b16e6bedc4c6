"""The README's own examples are valid: a user copies them first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dropflow.daemon.core.config import load_override
from dropflow.engine import registry

README = Path(__file__).resolve().parent.parent / "README.md"
ENGINE_OF_FOLDER = {
    "annotate": "annotate",
    "dataset": "dataset",
    "video-gen": "video-gen",
    "cluster": "cluster",
}


def override_examples() -> list[tuple[str, str]]:
    """Every ```yaml block of the README that starts with `# inbox/<route>/.../dropflow.yaml`."""
    blocks = re.findall(r"```yaml\n(# inbox/([\w-]+)/[^\n]*dropflow\.yaml\n.*?)```", README.read_text(), re.S)
    return [(folder, text) for text, folder in blocks]


def test_the_readme_has_override_examples() -> None:
    assert len(override_examples()) >= 2


@pytest.mark.parametrize(("folder", "text"), override_examples())
def test_each_override_example_is_valid(folder: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / "dropflow.yaml"
    path.write_text(text)
    override = load_override(path)  # raises ConfigError on an unknown key
    engine = registry.get(ENGINE_OF_FOLDER[folder])
    engine.Params.model_validate(override.params)  # raises ValidationError on a bad param

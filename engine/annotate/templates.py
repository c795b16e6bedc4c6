"""Prompt templates: finding them, loading them, and filling their ``{variables}``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropflow.engine.errors import ConfigError

if TYPE_CHECKING:
    from dropflow.engine.annotate.params import AnnotateParams

TEMPLATE_VARIABLES = ("videoAsrText", "videoAnalysisText", "videoExtraInfo", "videoRoles", "language")
_VARIABLE_RE = re.compile(r"\{(" + "|".join(TEMPLATE_VARIABLES) + r")\}")


def uses(template: str, variable: str) -> bool:
    return "{" + variable + "}" in template


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known ``{variables}``; any other brace (a JSON example in a prompt) stays as written."""
    return _VARIABLE_RE.sub(lambda m: values.get(m.group(1), ""), template)


def find_file(name: str, places: Sequence[Path]) -> Path | None:
    """`name` as an absolute path, or the first of `places / name` that is a file."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in places:
        if (base / p).is_file():
            return base / p
    return None


def load_template(name: str, key: str, places: Sequence[Path]) -> str:
    """The text of prompt template `name` (param `key`).

    Raises:
        ConfigError: not found (naming every place looked in), unreadable, or empty.
    """
    path = find_file(name, places)
    if path is None:
        where = ", ".join(str(p) for p in places)
        raise ConfigError(
            f"prompt file {name!r} (param {key}) not found; looked in: {where}",
            hint=f"put {name} in the prompts folder, or give an absolute path: --set {key}=/path/to/prompt.txt",
        )
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompt file {path}: {exc}", hint="save it as UTF-8 text") from exc
    if not text:
        raise ConfigError(f"prompt file {path} is empty", hint="write the instructions for the model into it")
    return text


def job_templates(p: AnnotateParams, places: Sequence[Path]) -> dict[str, str]:
    """The templates a job of these params uses: ``prompt`` (single mode), or ``segment`` and ``summary``.

    Raises:
        ConfigError: a template is missing, unreadable or empty, or the summary template has no
            ``{videoAnalysisText}``.
    """
    if p.mode == "single":
        return {"prompt": load_template(p.prompt, "prompt", places)}
    out = {
        "segment": load_template(p.segment_prompt, "segment_prompt", places),
        "summary": load_template(p.summary_prompt, "summary_prompt", places),
    }
    if not uses(out["summary"], "videoAnalysisText"):
        raise ConfigError(
            f"the summary template {p.summary_prompt!r} has no {{videoAnalysisText}}: "
            "the summary model would never see the segment analysis",
            hint="add {videoAnalysisText} where the analysis belongs",
        )
    return out

"""What a job reads beside its video: roles (route + ``<video>.roles.yaml``), extra information
(route + ``<video>.extra.txt``) and the roles' reference photos."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dropflow.engine.annotate.params import Role
from dropflow.engine.annotate.templates import find_file
from dropflow.engine.errors import ConfigError, InputError
from dropflow.engine.providers.base import ImagePart, Part, TextPart

if TYPE_CHECKING:
    from dropflow.engine.annotate.params import AnnotateParams

ROLES_SUFFIXES = (".roles.yaml", ".roles.yml")
EXTRA_SUFFIX = ".extra.txt"
URL_SUFFIX = ".url"  # mode: bailian: where the service can fetch the video (no upload then)


def sidecar(video: Path, suffixes: Sequence[str]) -> Path | None:
    """``clip.mp4.roles.yaml`` (preferred: unambiguous) or ``clip.roles.yaml`` beside the video."""
    for base in (video.name, video.stem):
        for suffix in suffixes:
            p = video.with_name(base + suffix)
            if p.is_file():
                return p
    return None


class _RolesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Role]


def load_roles(path: Path) -> list[Role]:
    """Roles from a sidecar: ``roles: [...]`` or a bare list of ``{name, description, photos}``.

    Raises:
        ConfigError: not YAML, or not roles (naming the file, the key and the line).
    """
    from dropflow.daemon.core.config import validation_error

    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not readable YAML ({exc})", hint="fix the roles sidecar") from exc
    if isinstance(data, list) and node is not None:
        # a bare list: validate it as `roles:` so that error locations still find their line
        key = yaml.ScalarNode("tag:yaml.org,2002:str", "roles", node.start_mark, node.end_mark)
        node = yaml.MappingNode("tag:yaml.org,2002:map", [(key, node)], node.start_mark, node.end_mark)
        data = {"roles": data}
    try:
        return _RolesFile.model_validate(data or {"roles": []}).roles
    except ValidationError as exc:
        raise validation_error(path, node, exc) from None


def merge_roles(base: Sequence[Role], extra: Sequence[Role]) -> list[Role]:
    """Route roles, with a sidecar's role of the same name replacing the route's."""
    names = {r.name for r in extra}
    return [r for r in base if r.name not in names] + list(extra)


def roles_text(roles: Sequence[Role]) -> str:
    if not roles:
        return ""
    lines = ["Characters (call them by these names, consistently):"]
    for r in roles:
        line = f"- {r.name}"
        if r.description:
            line += f": {r.description}"
        if r.photos:
            line += f" ({len(r.photos)} reference photo{'s' if len(r.photos) > 1 else ''} below)"
        lines.append(line)
    return "\n".join(lines)


def role_photo_parts(
    roles: Sequence[Role],
    places: Sequence[Path],
    max_side: int,
    quality: int,
    check: Callable[..., None] = lambda path, what="": None,
) -> list[Part]:
    """Each role's reference photos, labelled, as parts (blocking: reads and re-encodes images).
    `check(path, what=...)` refuses a path the job may not read (`JobContext.check_readable`).

    Raises:
        InputError: a photo is missing, not an image, or a link (or path) out of what the job
        may read.
    """
    from dropflow.engine.media import load_image, to_jpeg

    parts: list[Part] = []
    for role in roles:
        for ref in role.photos:
            parts.append(TextPart(f"Reference photo of {role.name}:"))
            if ref.startswith(("http://", "https://", "oss://")):
                parts.append(ImagePart(url=ref))
                continue
            path = find_file(ref, places)
            if path is None:
                raise InputError(
                    f"reference photo {ref!r} of role {role.name!r} not found (looked in "
                    f"{', '.join(str(p) for p in places)})",
                    hint="put the photo beside the video or in the prompts folder, or fix its path",
                )
            check(path, what=f"reference photo of role {role.name!r}")
            parts.append(ImagePart(data=to_jpeg(load_image(path), max_side=max_side, quality=quality)))
    return parts


@dataclass
class Sidecars:
    """A job's roles and extra information, each the route's joined with its sidecar's."""

    roles: list[Role]
    extra: str
    roles_dir: Path | None  # the roles sidecar's folder: its photos are looked for there first


def read_sidecars(p: AnnotateParams, video: Path, listed: Sequence[Path]) -> Sidecars:
    """Roles (route + sidecar) and extra info (route + sidecar). Blocking.

    `listed` are the job's inputs after the video (sidecars archived with it); a sidecar found
    beside the video is used when none is listed.

    Raises:
        ConfigError: a sidecar is unreadable, or not roles.
    """
    roles = list(p.roles)
    extra = p.extra_info.strip()
    roles_dir: Path | None = None
    roles_file = next((x for x in listed if x.name.endswith(ROLES_SUFFIXES)), None) or sidecar(
        video, ROLES_SUFFIXES
    )
    extra_file = next((x for x in listed if x.name.endswith(EXTRA_SUFFIX)), None) or sidecar(
        video, (EXTRA_SUFFIX,)
    )
    if roles_file is not None and roles_file.is_file():
        roles = merge_roles(roles, load_roles(roles_file))
        roles_dir = roles_file.parent
    if extra_file is not None and extra_file.is_file():
        try:
            text = extra_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {extra_file}: {exc}", hint="save it as UTF-8 text") from exc
        extra = f"{extra}\n{text}".strip()
    return Sidecars(roles, extra, roles_dir)

"""What one video-gen unit asks for: a prompt file, an image with its prompt, or a `.yaml` job file.

A unit is decided by names in one folder:

- ``shot.txt`` alone: text-to-video;
- ``shot.png`` (``.jpg .jpeg .webp``) with ``shot.txt``: image-to-video, one unit (the image is the
  primary; the `.txt` is not a unit of its own while the image is there). If the image already
  failed for want of a prompt (its ``.error.txt`` sidecar is there), a ``shot.txt`` dropped later
  becomes the primary of the pair, so adding the prompt is all it takes;
- ``shot.yaml`` / ``shot.yml``: a job file (`JobFile`); an image beside it with the same name
  belongs to it (and is archived with it); an image it names elsewhere is read where it lies.

Reading a unit gives a `VideoSpec`; the engine fills what it leaves open from the route's params.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from dropflow.daemon.core.config import validation_error
from dropflow.engine.errors import InputError
from dropflow.engine.files import error_sidecar

PROMPT_SUFFIX = ".txt"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
JOB_SUFFIXES = frozenset({".yaml", ".yml"})
ALL_SUFFIXES = frozenset({PROMPT_SUFFIX, *IMAGE_SUFFIXES, *JOB_SUFFIXES})
MAX_TEXT_BYTES = 256 * 1024  # a prompt or job file larger than this is not a prompt
REMOTE_PREFIXES = ("http://", "https://", "oss://", "data:")
NO_PROMPT = "has no prompt"  # in the error of an image dropped alone; its sidecar is how a later prompt knows

_SIZE_RE = re.compile(r"^(\d{2,5})\s*[*xX×]\s*(\d{2,5})$")
_RESOLUTION_RE = re.compile(r"^(\d{3,4})[pP]$")
_RATIO_RE = re.compile(r"^(\d{1,2})\s*:\s*(\d{1,2})$")


def normalize_size(value: str | None) -> str | None:
    """``1280x720`` / ``1280*720`` -> ``1280*720`` (DashScope's spelling). Raises ValueError."""
    if value is None:
        return None
    m = _SIZE_RE.match(str(value).strip())
    if m is None:
        raise ValueError("must be WIDTH*HEIGHT, e.g. 1280*720")
    return f"{m.group(1)}*{m.group(2)}"


def normalize_resolution(value: str | None) -> str | None:
    """``480p`` -> ``480P``. Raises ValueError."""
    if value is None:
        return None
    m = _RESOLUTION_RE.match(str(value).strip())
    if m is None:
        raise ValueError("must be like 480P, 720P or 1080P")
    return f"{m.group(1)}P"


def normalize_ratio(value: str | None) -> str | None:
    """``16:9`` / ``16 : 9`` -> ``16:9``; ``Adaptive`` -> ``adaptive``. Raises ValueError."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() == "adaptive":
        return "adaptive"
    m = _RATIO_RE.match(text)
    if m is None:
        raise ValueError("must be like 16:9, 4:3, 1:1, 3:4, 9:16, 21:9, or adaptive")
    return f"{m.group(1)}:{m.group(2)}"


def _sexagesimal(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``16:9`` as the base-60 number 969: give the ratio back."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        return f"{value // 60}:{value % 60}"
    return value


# size / resolution as DashScope spells them, however the user wrote them; a ratio as Ark does
Size = Annotated[str | None, AfterValidator(normalize_size)]
Resolution = Annotated[str | None, AfterValidator(normalize_resolution)]
Ratio = Annotated[str | None, BeforeValidator(_sexagesimal), AfterValidator(normalize_ratio)]


class JobFile(BaseModel):
    """A ``.yaml`` job file dropped into inbox/video-gen/. Every key is optional but the prompt
    (or an image); unknown keys are an error, reported with the file and line."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", description="What the video shows; may be empty with an image.")
    negative_prompt: str | None = Field(None, description="What it must not show.")
    image: str | None = Field(
        None, description="First frame: a path (relative to the job file) or an http(s)/oss URL."
    )
    last_image: str | None = Field(
        None, description="Seedance: last frame, as `image` (models that take one)."
    )
    model: str | None = Field(None, description="A model; the route's t2v / i2v model when empty.")
    size: Size = Field(
        None, description="wan text-to-video size, WIDTH*HEIGHT, e.g. 832*480 (one the model makes)."
    )
    resolution: Resolution = Field(
        None, description="480P, 720P, 1080P: wan image-to-video, or any seedance video."
    )
    ratio: Ratio = Field(None, description="Seedance: 16:9, 4:3, 1:1, 3:4, 9:16, 21:9 or adaptive.")
    camera_fixed: bool | None = Field(None, description="Seedance: keep the camera still.")
    watermark: bool | None = Field(None, description="Seedance: add the service's watermark.")
    duration: int | None = Field(None, ge=1, le=60, description="Seconds of video.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Fixed seed for repeatable output.")
    prompt_extend: bool | None = Field(None, description="Let the provider rewrite the prompt.")


@dataclass(frozen=True)
class VideoSpec:
    """What a unit asks for; None means "the route's default"."""

    kind: Literal["t2v", "i2v"]
    prompt: str
    image: str | None = None  # an absolute local path or a URL
    negative_prompt: str | None = None
    model: str | None = None
    size: str | None = None
    resolution: str | None = None
    duration: int | None = None
    seed: int | None = None
    prompt_extend: bool | None = None
    job_file: str | None = None  # the job file's name, when there was one
    last_image: str | None = None  # an absolute local path or a URL (seedance models that take one)
    ratio: str | None = None
    camera_fixed: bool | None = None
    watermark: bool | None = None


# --- which files make a unit ------------------------------------------------------------------------


def _sibling(path: Path, suffixes: frozenset[str] | tuple[str, ...]) -> Path | None:
    """A file beside `path` with the same stem and one of `suffixes` (either case), if any."""
    for suffix in sorted(suffixes):
        for variant in (suffix, suffix.upper()):
            candidate = path.with_name(path.stem + variant)
            if candidate != path and candidate.is_file():
                return candidate
    return None


def unit_inputs(path: Path) -> list[Path] | None:
    """The files of the unit whose primary is `path` (primary first), or None when `path` belongs
    to another unit (the prompt of an image, the image of a job file) or is not ours."""
    suffix = path.suffix.lower()
    if suffix == PROMPT_SUFFIX:
        image = _sibling(path, IMAGE_SUFFIXES)
        if image is None or _sibling(image, tuple(JOB_SUFFIXES)) is not None:
            return [path]
        if _failed_for_want_of_a_prompt(image):
            return [path, image]  # this prompt completes the pair
        return None
    if suffix in IMAGE_SUFFIXES:
        if _sibling(path, JOB_SUFFIXES) is not None:
            return None  # shot.yaml owns shot.png
        prompt = _sibling(path, (PROMPT_SUFFIX,))
        return [path, prompt] if prompt is not None else [path]
    if suffix in JOB_SUFFIXES:
        image = _job_image_beside(path)
        return [path, image] if image is not None else [path]
    return None


def _failed_for_want_of_a_prompt(image: Path) -> bool:
    """The image was dropped alone and its job failed for that (and for nothing else: a pair whose
    task failed must not become a second, paid job through its prompt)."""
    try:
        with open(error_sidecar(image), encoding="utf-8", errors="replace") as fh:
            return f"{image.name} {NO_PROMPT}" in fh.read(4096)
    except OSError:
        return False


def _job_image_beside(job: Path) -> Path | None:
    """The image a job file names, when it is the same-named file beside it (so it is archived with it)."""
    try:
        data = yaml.safe_load(job.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # the run reports what is wrong with the file
    ref = data.get("image") if isinstance(data, dict) else None
    if not isinstance(ref, str) or ref.startswith(REMOTE_PREFIXES):
        return None
    image = _local(ref, job.parent)
    if image.parent == job.parent and image.stem == job.stem and image.suffix.lower() in IMAGE_SUFFIXES:
        return image
    return None


def _local(ref: str, base: Path) -> Path:
    p = Path(ref.removeprefix("file://")).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


# --- reading a unit ---------------------------------------------------------------------------------


def read_text(path: Path, what: str) -> str:
    """A small UTF-8 text file, stripped (a BOM is dropped).

    Raises InputError: missing, too large, or not UTF-8 text.
    """
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise InputError(
                f"{path.name} is {size:,} bytes; a {what} is at most {MAX_TEXT_BYTES:,}",
                hint=f"is {path.name} really a {what}? keep it short plain text",
            )
        return path.read_text(encoding="utf-8-sig").strip()
    except FileNotFoundError:
        raise InputError(
            f"{path.name} disappeared before it was read",
            hint="drop it again; a file that belongs to this job was moved away",
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint=f"save {path.name} as UTF-8 plain text",
        ) from exc


def load_job_file(path: Path) -> JobFile:
    """Parse and validate a job file; errors name the file, the key and the line.

    Raises InputError.
    """
    text = read_text(path, "job file")
    try:
        # no ${VAR} interpolation here, unlike config.yaml: a prompt must never pull in the environment
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark is not None else path.name
        raise InputError(
            f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}",
            hint=f"fix the YAML syntax of {path.name} at that line and drop it again",
        ) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(
            f"{path.name}:1: a job file is a mapping of keys (prompt: ..., image: ...)",
            hint="see the README's video-gen section for the job file keys",
        )
    try:
        return JobFile.model_validate(data)
    except ValidationError as exc:
        err = validation_error(path, node, exc)
        raise InputError(
            err.message,
            hint=f"fix {path.name} (keys: {', '.join(JobFile.model_fields)}) and drop it again",
        ) from None


def read_spec(inputs: list[Path], *, default_prompt: str = "") -> VideoSpec:
    """What the unit asks for (blocking: reads files, decodes the image header).

    Raises InputError: an unreadable file, an empty prompt, an image that is not one, a job file
    with bad keys or values, an image with no prompt and no route default.
    """
    by_kind: dict[str, Path] = {}
    for p in inputs:
        s = p.suffix.lower()
        by_kind["job" if s in JOB_SUFFIXES else "image" if s in IMAGE_SUFFIXES else "prompt"] = p
    if "job" in by_kind:
        return _from_job_file(by_kind["job"])
    image = by_kind.get("image")
    prompt = read_text(by_kind["prompt"], "prompt") if "prompt" in by_kind else ""
    if image is None:
        txt = by_kind["prompt"]
        if not prompt:
            raise InputError(f"{txt.name} is empty", hint=f"write the video's description into {txt.name}")
        return VideoSpec(kind="t2v", prompt=prompt)
    check_image(image)
    if not prompt:
        if not default_prompt.strip():
            raise InputError(
                f"{image.name} {NO_PROMPT}: no {image.stem}.txt beside it (or it is empty) "
                "and the route sets no default_prompt",
                hint=f"drop {image.stem}.txt with the prompt next to {image.name} (the pair then runs), "
                "or set params.default_prompt for this route",
            )
        prompt = default_prompt.strip()
    return VideoSpec(kind="i2v", prompt=prompt, image=str(image))


def check_image(path: Path) -> None:
    """Raises InputError unless `path` is a readable image within the pixel cap."""
    from dropflow.engine.media import load_image

    load_image(path)


def _job_image(path: Path, ref: str | None, key: str) -> str | None:
    """A job file's image reference: a URL as it is, a local image checked and made absolute."""
    if not ref:
        return None
    if ref.startswith(REMOTE_PREFIXES):
        return ref
    local = _local(ref, path.parent)
    if not local.is_file():
        raise InputError(
            f"{path.name}: {key} {ref!r} does not exist (looked for {local})",
            hint="give a path relative to the job file, an absolute path, or an http(s) URL",
        )
    if local.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(
            f"{path.name}: {key} {local.name} is not a {'/'.join(sorted(IMAGE_SUFFIXES))} file",
            hint="convert the frame to PNG or JPEG",
        )
    check_image(local)
    return str(local)


def _from_job_file(path: Path) -> VideoSpec:
    job = load_job_file(path)
    image = _job_image(path, job.image, "image")
    last_image = _job_image(path, job.last_image, "last_image")
    if last_image is not None and image is None:
        raise InputError(
            f"{path.name} has a last_image but no image (the first frame)",
            hint="add `image:` with the first frame; a last frame only comes with one",
        )
    if not job.prompt.strip() and image is None:
        raise InputError(
            f"{path.name} has neither a prompt nor an image", hint="add `prompt: ...` to the job file"
        )
    if job.size and job.resolution:
        raise InputError(
            f"{path.name} sets both size and resolution",
            hint="size (WIDTH*HEIGHT) is for text-to-video, resolution (480P/720P/1080P) for image-to-video",
        )
    fields: dict[str, Any] = job.model_dump(exclude={"image", "prompt", "last_image"})
    return VideoSpec(
        kind="i2v" if image else "t2v",
        prompt=job.prompt.strip(),
        image=image,
        last_image=last_image,
        job_file=path.name,
        **fields,
    )

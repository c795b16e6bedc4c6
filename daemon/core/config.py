"""Typed configuration: `config.yaml` and per-folder `dropflow.yaml` overrides.

Every model forbids unknown keys; a validation error names the file, the key path and the line.
`${VAR}` and `${VAR:-default}` are replaced from the environment before validation, so keys can
stay out of the file. Relative paths resolve against the folder of the config file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from dropflow.engine.errors import ConfigError

M = TypeVar("M", bound="BaseModel")

CONFIG_ENV = "DROPFLOW_CONFIG"
DEFAULT_CONFIG_NAME = "config.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paths(_Model):
    inbox: Path = Field(
        Path("inbox"), description="Root of the watched drop folders (one subfolder per route)."
    )
    outputs: Path = Field(Path("outputs"), description="Where results go, one folder per engine.")
    archive: Path = Field(Path("archive"), description="Where processed inputs are moved; never deleted.")
    prompts: Path = Field(Path("prompts"), description="Prompt templates referenced by routes.")
    state: Path = Field(Path(".dropflow"), description="The SQLite database and the logs.")

    @property
    def database(self) -> Path:
        return self.state / "dropflow.db"

    @property
    def logs(self) -> Path:
        return self.state / "logs"


DATABASE_ENV = "DROPFLOW_DATABASE"
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


class StateSettings(_Model):
    """`state`: where the job store lives."""

    database: str | None = Field(
        None,
        description="The job store: empty for the SQLite file in paths.state; a path to another SQLite "
        "file; or a postgresql:// URL, one queue shared by several daemons (put the password in "
        "${ENV_VAR} or ~/.pgpass). The DROPFLOW_DATABASE environment variable overrides it.",
    )


def is_database_url(value: str) -> bool:
    return value.startswith(DATABASE_URL_SCHEMES)


def redact_url(target: Path | str) -> str:
    """A database target fit for logs and messages: a URL's password replaced by `***`."""
    text = str(target)
    if not is_database_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    user = unquote(parts.username or "")
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class WatchSettings(_Model):
    settle_seconds: float = Field(2.0, ge=0, description="A file is ready when unchanged this long.")
    rescan_seconds: float = Field(
        30.0, gt=0, description="Full rescan period; watcher events are only hints."
    )
    check_seconds: float = Field(0.25, gt=0, description="How often pending files are re-checked.")
    force_polling: bool = Field(False, description="Poll instead of OS events (network mounts, containers).")
    trust_mtime: bool = Field(
        True,
        description="A file whose mtime is already older than the settle window (moved in from elsewhere) "
        "is ready at once. Turn off on network mounts whose clocks drift.",
    )


class SchedulerSettings(_Model):
    max_concurrency: int = Field(24, ge=1, description="Jobs running at once, all engines together.")
    engine_concurrency: dict[str, int] = Field(
        default_factory=lambda: {"annotate": 2, "dataset": 16, "video-gen": 8, "cluster": 1},
        description="Per-engine cap on running jobs.",
    )
    lease_seconds: float = Field(30.0, gt=1, description="A claimed job's lease; renewed by a heartbeat.")
    max_attempts: int = Field(5, ge=1, description="Default attempts before a retryable error fails a job.")
    backoff_base_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles each attempt.")
    backoff_max_seconds: float = Field(600.0, gt=0, description="Upper bound of a retry delay.")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM/SIGINT, running jobs get this long to finish before release."
    )
    tick_seconds: float = Field(0.25, gt=0, description="Scheduler loop period (commands apply within it).")


class ProviderSettings(_Model):
    api_key: SecretStr | None = Field(None, description="API key; use ${ENV_VAR}, never a literal in git.")
    api_key_file: Path | None = Field(None, description="A file holding the key (first line).")
    base_url: str | None = Field(None, description="Endpoint; the provider's public one when empty.")
    requests_per_minute: float | None = Field(None, gt=0, description="Client-side request rate cap.")
    concurrency: int | None = Field(None, ge=1, description="Requests in flight at once.")
    timeout_seconds: float = Field(120.0, gt=0, description="Per-request timeout.")

    def key(self) -> str | None:
        if self.api_key is not None and self.api_key.get_secret_value().strip():
            return self.api_key.get_secret_value().strip()
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the key file {self.api_key_file}: {exc.strerror}",
                    hint="fix providers.*.api_key_file or set the key through an environment variable",
                ) from exc
            return text.splitlines()[0].strip() if text else None
        return None


# `providers.dashscope.region`: where the key was issued (keys are region-bound). The SDK's own
# region ids are accepted too; those of its MaaS regions need `workspace` (they name the host).
DashScopeRegion = Literal[
    "beijing",
    "cn-beijing",
    "singapore",
    "ap-southeast-1",
    "us-east-1",
    "cn-hongkong",
    "eu-central-1",
    "ap-northeast-1",
]


class DashScopeSettings(ProviderSettings):
    """`providers.dashscope`: the common settings, plus the region the key belongs to."""

    region: DashScopeRegion | None = Field(
        None,
        description="Where the key was issued: beijing (dashscope.aliyuncs.com) or singapore "
        "(international, dashscope-intl.aliyuncs.com); or an SDK region id (needs workspace for "
        "us-east-1, cn-hongkong, eu-central-1, ap-northeast-1). Empty: base_url, else the SDK's "
        "DASHSCOPE_HTTP_BASE_URL / DASHSCOPE_API_REGION / DASHSCOPE_WORKSPACE_ID, else beijing.",
    )
    workspace: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Model Studio workspace id, sent with every call (X-DashScope-WorkSpace); "
        "a MaaS region's host takes DASHSCOPE_WORKSPACE_ID when this is empty.",
    )
    # DashScope lets a non-streaming call run 180 s before it answers with what it has: a client
    # that gives up sooner pays for the answer and never sees it
    timeout_seconds: float = Field(200.0, gt=0, description="Per-request timeout (over the 180 s call cap).")


class ArkSettings(ProviderSettings):
    """`providers.ark`: Volcengine Ark (Doubao Seedance video generation), through the official
    `volcengine-ark-runtime` SDK. The key is Ark's API key (ARK_API_KEY), sent as a bearer token."""

    # video tasks are created and polled with short calls; a create call that hangs this long is
    # failed as "outcome unknown" rather than waited on
    timeout_seconds: float = Field(60.0, gt=0, description="Per-request timeout.")


class OfflineSettings(_Model):
    latency_seconds: float = Field(0.0, ge=0, description="Simulated latency per call (demos, benches).")
    video_seconds: float = Field(3.0, ge=0, description="Simulated generation time of an offline video.")


class BailianSettings(_Model):
    """`providers.bailian`: hosted video analysis on Bailian (the QuanMiao light app), used by
    the annotate engine's `mode: bailian`. The AccessKey pair is read from the environment
    (ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET) and never stored."""

    workspace_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Bailian (Model Studio) workspace id, e.g. llm-xxxx; every call names it.",
    )
    endpoint: str = Field(
        "quanmiaolightapp.cn-beijing.aliyuncs.com",
        description="The service's host; an http:// or https:// URL (with a port) points the SDK elsewhere.",
    )
    region_id: str = Field("cn-beijing", description="The region of the endpoint.")
    oss_endpoint: str | None = Field(
        None, description="OSS endpoint for uploads, e.g. https://oss-cn-beijing.aliyuncs.com."
    )
    oss_region: str = Field("cn-beijing", description="The OSS bucket's region (V4 signatures name it).")
    oss_bucket: str | None = Field(
        None, description="Bucket a dropped video is uploaded to (unless it has a .url sidecar)."
    )
    oss_prefix: str = Field("dropflow/annotate/", description="Key prefix of uploaded videos.")
    url_expiry_seconds: int = Field(
        6 * 3600,
        ge=600,
        le=7 * 24 * 3600,
        description="How long the signed URL the service fetches stays valid (V4: 7 days at most); "
        "it must outlast the task's time in the queue.",
    )
    timeout_seconds: float = Field(60.0, gt=0, description="Per-call timeout (submit, poll, upload).")


ProviderName = Literal["auto", "offline", "dashscope", "openai", "anthropic", "ark"]


class Providers(_Model):
    default: ProviderName = Field(
        "auto", description="auto = dashscope when its key is set, else offline (announced at start)."
    )
    dashscope: DashScopeSettings = Field(
        default_factory=lambda: DashScopeSettings(requests_per_minute=1200, concurrency=16)
    )
    openai: ProviderSettings = Field(default_factory=ProviderSettings)
    anthropic: ProviderSettings = Field(default_factory=ProviderSettings)
    ark: ArkSettings = Field(
        default_factory=lambda: ArkSettings(requests_per_minute=600, concurrency=8),
        description="Volcengine Ark (Seedance video generation); key from ARK_API_KEY.",
    )
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    bailian: BailianSettings = Field(default_factory=BailianSettings)


class Route(_Model):
    name: str = Field(description="Unique name; stored with every job.")
    folder: str = Field(description="Inbox subfolder this route watches, relative to paths.inbox.")
    engine: str = Field(description="Engine name: annotate, dataset, video-gen, cluster (or a plugin).")
    glob: str = Field("*", description="Only names matching this pattern (fnmatch, case-insensitive).")
    provider: ProviderName | None = Field(
        None, description="Provider for this route; providers.default if empty."
    )
    priority: int = Field(0, description="Higher runs first.")
    max_attempts: int | None = Field(None, ge=1, description="Overrides scheduler.max_attempts.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Engine parameters (validated by the engine)."
    )

    @field_validator("folder")
    @classmethod
    def _relative(cls, value: str) -> str:
        p = Path(value)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a subfolder of the inbox (no absolute path, no '..')")
        return p.as_posix().strip("/")


def _default_routes() -> list[Route]:
    return [
        Route(name="annotate", folder="annotate", engine="annotate"),
        Route(name="dataset", folder="dataset", engine="dataset"),
        Route(name="video-gen", folder="video-gen", engine="video-gen"),
        Route(name="cluster", folder="cluster", engine="cluster"),
    ]


class EngineSettings(_Model):
    plugins: list[str] = Field(
        default_factory=list, description="Extra engines to load, as 'module:Class' import paths."
    )


class LogSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    max_bytes: int = Field(5_000_000, ge=10_000, description="Rotate the log file at this size.")
    backups: int = Field(5, ge=0, description="Rotated log files kept.")


class Config(_Model):
    paths: Paths = Field(default_factory=Paths)
    state: StateSettings = Field(default_factory=StateSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    providers: Providers = Field(default_factory=Providers)
    routes: list[Route] = Field(default_factory=_default_routes)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    logging: LogSettings = Field(default_factory=LogSettings)

    source: Path | None = Field(None, exclude=True, description="The file this was read from (set by load).")

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[Route]) -> list[Route]:
        seen: set[str] = set()
        for r in routes:
            if r.name in seen:
                raise ValueError(f"route name {r.name!r} is used twice")
            seen.add(r.name)
        return routes

    def resolve(self, base: Path) -> Config:
        """Make every relative path absolute against `base` (the config file's folder)."""
        p = self.paths
        for name in ("inbox", "outputs", "archive", "prompts", "state"):
            value = getattr(p, name)
            if not value.is_absolute():
                setattr(p, name, (base / value).resolve())
        keyed = self.providers
        for prov in (keyed.dashscope, keyed.openai, keyed.anthropic, keyed.ark):
            if prov.api_key_file is not None and not prov.api_key_file.is_absolute():
                prov.api_key_file = (base / prov.api_key_file).resolve()
        return self

    @property
    def database(self) -> Path | str:
        """The job store `Store.open` takes: a SQLite file's path, or a `postgresql://` URL
        (`DROPFLOW_DATABASE` first, then `state.database`, else the file in `paths.state`)."""
        value = os.environ.get(DATABASE_ENV) or self.state.database
        if not value:
            return self.paths.database
        if is_database_url(value):
            return value
        return Path(value).expanduser().absolute()

    def secrets(self) -> list[str]:
        """Every secret value this config holds, for redaction."""
        out = []
        db = self.database
        if isinstance(db, str):
            password = urlsplit(db).password
            if password:
                out += [password, unquote(password)]
        keyed = self.providers
        for prov in (keyed.dashscope, keyed.openai, keyed.anthropic, keyed.ark):
            try:
                key = prov.key()
            except ConfigError:
                key = None
            if key:
                out.append(key)
        # Bailian's AccessKey secret lives only in the environment; redact it wherever it shows
        secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip()
        if secret:
            out.append(secret)
        return out


class FolderOverride(_Model):
    """A `dropflow.yaml` inside an inbox subfolder: overrides for everything routed below it."""

    provider: ProviderName | None = Field(None, description="Provider for files below this folder.")
    priority: int | None = Field(None, description="Priority for files below this folder.")
    max_attempts: int | None = Field(None, ge=1, description="Attempts for files below this folder.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Engine parameters merged over the route's."
    )


# --- loading -------------------------------------------------------------------------------------

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset variable without default becomes empty."""
    env = os.environ if env is None else env  # type: ignore[assignment]

    def sub(m: re.Match[str]) -> str:
        value = env.get(m.group(1))  # type: ignore[union-attr]
        return value if value else (m.group(2) or "")

    return _ENV_RE.sub(sub, text)


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree; the 1-based line of the deepest hit."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _parse_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML: {problem}", hint="fix the YAML syntax at that line"
        ) from exc
    return data, node


def validation_error(path: Path, node: yaml.Node | None, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(node, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo? see the README's config reference)"
        lines.append(f"{where}: {key}: {msg}")
    return ConfigError("\n".join(lines), hint=f"edit {path} at the line shown")


def parse_model(model: type[M], path: Path, text: str, *, env: dict[str, str] | None = None) -> M:
    """Validate YAML text against `model`; errors name `path`, the key path and the line."""
    data, node = _parse_yaml(path, interpolate(text, env))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of keys at the top level", hint=f"edit {path}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(path, node, exc) from None


def find_config(explicit: str | Path | None = None) -> Path:
    """--config, then $DROPFLOW_CONFIG, then ./config.yaml."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / DEFAULT_CONFIG_NAME).resolve()


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {path}",
            hint="run `dropflow init DIR` to create one, or pass --config PATH / set DROPFLOW_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the file's permissions") from exc
    cfg = parse_model(Config, path, text)
    cfg.source = path
    return cfg.resolve(path.parent)


def load_override(path: Path) -> FolderOverride:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the file's permissions") from exc
    return parse_model(FolderOverride, path, text)


def redacted_dump(cfg: Config) -> str:
    """The effective config as YAML with every secret replaced; what `dropflow config show` prints."""
    data = cfg.model_dump(mode="json")
    for name in ("dashscope", "openai", "anthropic", "ark"):
        prov = data["providers"][name]
        if prov.get("api_key"):
            prov["api_key"] = "***redacted***"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

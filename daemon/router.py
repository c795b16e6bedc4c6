"""Routing: which route (and so which engine, provider and params) a dropped path belongs to.

First matching route wins: the path must lie in the route's folder, its unit's name must match the
route's glob, and the engine must accept it. Per-folder `dropflow.yaml` files between the route
folder and the unit override provider, priority, attempts and params.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dropflow.daemon.core.config import Config, Route, line_of, load_override
from dropflow.engine import registry
from dropflow.engine.base import Engine
from dropflow.engine.errors import ConfigError, DropflowError, InputError
from dropflow.engine.files import FOLDER_OVERRIDE_NAME, check_inside, is_ignored_name
from dropflow.engine.providers import resolve_default


@dataclass
class Unit:
    """One would-be job: a route's decision about a path."""

    route: Route
    engine: str
    path: Path
    inputs: list[Path]
    batch: str
    params: dict[str, Any]
    provider: str | None
    priority: int
    max_attempts: int
    error: DropflowError | None = None  # invalid params/overrides: the job is created failed
    overrides: list[Path] = field(default_factory=list)
    folder: bool = False  # a folder unit (its engine takes the folder whole), not a file
    linked_out: bool = False  # an input is a link out of the inbox: never read, the job fails


@dataclass
class _Settings:
    params: dict[str, Any]
    provider: str | None
    priority: int
    max_attempts: int
    error: DropflowError | None = None
    overrides: list[Path] = field(default_factory=list)


class Router:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.inbox = cfg.paths.inbox
        self._engines: dict[str, Engine] = {}
        self._folders: dict[str, Path] = {}
        self._default: str | None = None

    def engine(self, name: str) -> Engine:
        if name not in self._engines:
            self._engines[name] = registry.get(name)()
        return self._engines[name]

    def route_folder(self, route: Route) -> Path:
        folder = self._folders.get(route.name)
        if folder is None:
            folder = self._folders[route.name] = self.inbox / route.folder if route.folder else self.inbox
        return folder

    def unit_root(self, path: Path) -> tuple[Route, Path] | None:
        """The first route claiming `path` (or something below it), and the unit path it belongs to."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return None
        if any(is_ignored_name(part) for part in rel.parts):
            return None
        for route in self.cfg.routes:
            base = Path(route.folder) if route.folder else Path()
            try:
                inner = rel.relative_to(base)
            except ValueError:
                continue
            if not inner.parts:
                continue
            eng = self.engine(route.engine)
            if eng.unit == "folder":
                unit = self.route_folder(route) / inner.parts[0]
                if not unit.is_dir() and eng.inputs_for(unit) is None:
                    continue
            else:
                unit = path
                if unit.is_dir() or eng.inputs_for(unit) is None:
                    continue
            if not fnmatch.fnmatch(unit.name.lower(), route.glob.lower()):
                continue
            return route, unit
        return None

    def default_provider(self) -> str | None:
        """The provider a route without one uses (`providers.default`, `auto` resolved: offline when
        no key is set), recorded on each job so the queue says which provider it runs on."""
        if self._default is None:
            try:
                self._default = resolve_default(self.cfg.providers)[0]
            except ConfigError:  # an unreadable key file: the job's own run will say so
                return None
        return self._default

    def replan(self, route_name: str, unit: Path) -> Unit | None:
        """The plan of a registered unit as the config and its folders' `dropflow.yaml` say now;
        None when its route is gone from the config."""
        route = next((r for r in self.cfg.routes if r.name == route_name), None)
        return self.plan(route, unit) if route is not None else None

    def plan(self, route: Route, unit: Path) -> Unit | None:
        """Resolve a settled unit into a job plan; None when the engine does not take it after all."""
        return self.plan_many([(route, unit)])[0]

    def plan_many(self, items: list[tuple[Route, Path]]) -> list[Unit | None]:
        """`plan` for a batch: the overrides of each folder are read and validated once per batch."""
        settings: dict[tuple[str, str], _Settings] = {}
        out: list[Unit | None] = []
        for route, unit in items:
            eng = self.engine(route.engine)
            is_folder = eng.unit == "folder" and unit.is_dir()
            # a folder too: its engine may find nothing in it to do (what a job left behind)
            inputs = eng.inputs_for(unit)
            if inputs is None:
                out.append(None)
                continue
            base = self.route_folder(route)
            parts = unit.parts[len(base.parts) :]
            batch = parts[0] if eng.unit == "folder" or len(parts) > 1 else ""
            folder = unit if is_folder else unit.parent
            key = (route.name, str(folder))
            if key not in settings:
                settings[key] = self._settings(route, base, folder)
            st = settings[key]
            error, linked_out = st.error, False
            try:
                for p in inputs:
                    check_inside(p, self.inbox)
            except InputError as exc:
                error, linked_out = exc, True
            out.append(
                Unit(
                    route=route,
                    engine=route.engine,
                    path=unit,
                    inputs=inputs,
                    batch=batch,
                    params=st.params,  # shared by the batch's units; nothing mutates it
                    provider=st.provider if st.provider not in (None, "auto") else self.default_provider(),
                    priority=st.priority,
                    max_attempts=st.max_attempts,
                    error=error,
                    overrides=st.overrides,
                    folder=is_folder,
                    linked_out=linked_out,
                )
            )
        return out

    def _settings(self, route: Route, base: Path, folder: Path) -> _Settings:
        """Route settings with every `dropflow.yaml` from the route folder down to `folder` applied."""
        st = _Settings(
            params=dict(route.params),
            provider=route.provider,
            priority=route.priority,
            max_attempts=route.max_attempts or self.cfg.scheduler.max_attempts,
        )
        try:
            folders = [base]
            for part in folder.parts[len(base.parts) :]:
                folders.append(folders[-1] / part)
            for f in folders:
                ov_path = f / FOLDER_OVERRIDE_NAME
                if not ov_path.is_file():
                    continue
                ov = load_override(ov_path)
                st.overrides.append(ov_path)
                st.params.update(ov.params)
                st.provider = ov.provider or st.provider
                st.priority = ov.priority if ov.priority is not None else st.priority
                st.max_attempts = ov.max_attempts or st.max_attempts
            st.params = self.validate_params(route, st.params, st.overrides)
        except DropflowError as exc:
            st.error = exc
        return st

    def validate_params(
        self,
        route: Route,
        params: dict[str, Any],
        overrides: list[Path],
        command_line: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check params against the engine's model; errors name where each bad key was set: the
        command line (`--set`, given as `command_line`), a `dropflow.yaml`, or config.yaml."""
        model = self.engine(route.engine).Params
        try:
            return model.model_validate(params).model_dump(mode="json")
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                top = str(err["loc"][0]) if err["loc"] else ""
                if command_line is not None and top in command_line:
                    where = f"the command line (--set {top}={command_line[top]!r})"
                else:
                    where = self._where_set(route, top, overrides)
                lines.append(f"{where}: params.{key}: {err['msg']}")
            raise ConfigError(
                "\n".join(lines),
                hint=f"fix the parameter for engine {route.engine!r} "
                f"(known: {', '.join(sorted(model.model_fields))})",
            ) from None

    def _where_set(self, route: Route, key: str, overrides: list[Path]) -> str:
        for ov in reversed(overrides):
            line = _key_line(ov, ("params", key))
            if line is not None:
                return f"{ov}:{line}"
        src = self.cfg.source
        index = next((i for i, r in enumerate(self.cfg.routes) if r.name == route.name), None)
        if src is None or index is None:  # no config file, or a route made up for `dropflow submit`
            return f"route {route.name!r}"
        line = _key_line(src, ("routes", index, "params", key))
        return f"{src}:{line}" if line else f"{src} (route {route.name!r})"

    def table(self) -> list[dict[str, Any]]:
        """The route table, as `dropflow config check` prints it."""
        rows = []
        for r in self.cfg.routes:
            eng = self.engine(r.engine)
            rows.append(
                {
                    "route": r.name,
                    "folder": str(self.route_folder(r)),
                    "glob": r.glob,
                    "engine": r.engine,
                    "unit": eng.unit,
                    "accepts": ", ".join(sorted(eng.extensions)) or "anything",
                    "provider": r.provider or self.default_provider() or self.cfg.providers.default,
                }
            )
        return rows


def _key_line(path: Path, loc: tuple[int | str, ...]) -> int | None:
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = line_of(node, loc)
    # _line_of stops at the deepest key it found; only a full match is an answer
    probe: yaml.Node | None = node
    for part in loc:
        if isinstance(probe, yaml.MappingNode):
            probe = next((v for k, v in probe.value if k.value == part), None)
        elif isinstance(probe, yaml.SequenceNode) and isinstance(part, int) and part < len(probe.value):
            probe = probe.value[part]
        else:
            probe = None
        if probe is None:
            return None
    return line

"""The clustering kernels are compiled at daemon start, in a thread, only when a route clusters."""

from __future__ import annotations

import threading

import pytest

from dropflow.daemon.core.config import Config, Route
from dropflow.daemon.daemon import warm_clustering
from dropflow.engine.cluster import clustering


def test_start_warms_the_clustering_off_the_event_loop_once(
    project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(clustering, "_warmed", False)
    monkeypatch.setattr(clustering, "_warm_up", lambda: calls.append(threading.current_thread().name))
    route = Route(name="faces", folder="faces", engine="cluster")
    thread = warm_clustering(project.model_copy(update={"routes": [*project.routes, route]}))
    assert thread is not None and thread.daemon
    thread.join(10)
    clustering.warm_up()  # the cluster engine's own call at its first job: already done
    assert calls == ["dropflow-warm-clustering"]


def test_no_cluster_route_no_warm_up(project: Config) -> None:
    assert not any(r.engine == "cluster" for r in project.routes)
    assert warm_clustering(project) is None

"""SIGKILL of the daemon in the middle of a distribution; the restart files everything exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core.store import Store
from dropflow.engine.files import TEMP_PREFIX
from tests import onnx_standins as st
from tests.conftest import DaemonProcess, wait_for
from tests.test_cluster import assert_sorted, cluster_config, drop_folder

# the journal runs in photo order: the group photo (three persons: a hard link, then two copies,
# then the source is removed) is first
SPEC: dict[str, list[int]] = {
    "a_group.jpg": [0, 1, 3],
    "b.jpg": [0],
    "c.jpg": [1],
    "d.jpg": [3],
    "e.jpg": [0, 1],
    "f.jpg": [2],
    "g.jpg": [],
}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dropflow.engine.cluster import clustering

    clustering.warm_up()  # numba's disk cache is filled before the daemons need it
    return st.build_pack(tmp_path_factory.mktemp("insightface"))


async def _wait(predicate: Any, log: Path, what: str) -> None:
    try:
        await wait_for(predicate, timeout=90)
    except AssertionError:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise AssertionError(f"{what} did not happen; daemon log:\n{tail}") from None


@pytest.mark.parametrize(
    ("steps", "group_copies"),
    [
        (2, 2),  # killed with the group photo in two of its three folders
        (5, 3),  # killed after the group photo, with b.jpg linked into its folder but not yet removed
    ],
)
async def test_sigkill_mid_distribution_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, model_root: Path, steps: int, group_copies: int
) -> None:
    cfg = cluster_config(tmp_path, model_root)
    assert cfg.source is not None
    unit = drop_folder(cfg, "party", SPEC)
    out = cfg.paths.outputs / "cluster" / "party"
    marker = tmp_path / "paused"

    async def paused() -> bool:
        return marker.exists()

    env = {"DROPFLOW_TEST_CLUSTER_PAUSE_AFTER": str(steps), "DROPFLOW_TEST_CLUSTER_PAUSE_MARKER": str(marker)}
    with DaemonProcess(cfg.source, **env) as first:
        await _wait(paused, first.log, "the pause mid-distribution")
        first.kill()

    # the kill landed mid-distribution: the plan is committed, some photos are filed, some are not
    copies = [p for p in out.rglob("a_group.jpg")]
    assert len(copies) == group_copies
    assert (unit / "a_group.jpg").exists() == (group_copies < 3)
    assert (unit / "g.jpg").exists()
    async with Store.open(cfg.paths.database) as store:
        [job] = await store.list()
        assert job.status == "running"
        cur = await store.db.execute("SELECT phase FROM cluster_runs WHERE job_id = ?", (job.id,))
        assert (await cur.fetchone())[0] == "distribute"  # type: ignore[index]

    with DaemonProcess(cfg.source) as second:

        async def done() -> bool:
            async with Store.open(cfg.paths.database) as store:
                return [j.status for j in await store.list()] == ["succeeded"]

        await _wait(done, second.log, "the restarted job's success")
        assert second.terminate() == 0

    async with Store.open(cfg.paths.database) as store:
        [job] = await store.list()
    assert job.attempts == 2
    owner = assert_sorted(out, SPEC)
    # every photo exactly where the plan put it, once; nothing left in the inbox; no half files
    for name, identities in SPEC.items():
        found = sorted(
            p.relative_to(out).as_posix() for p in out.rglob(name) if "contact_sheets" not in p.parts
        )
        if len(identities) == 1 and identities[0] == 2:
            expected = ["unsorted/f.jpg"]
        elif not identities:
            expected = ["no_faces/g.jpg"]
        else:
            expected = sorted(f"{owner[i]}/{name}" for i in identities)
        assert found == expected, (name, found)
    assert not any("(2)" in p.name for p in out.rglob("*"))
    assert not list(cfg.paths.outputs.rglob(TEMP_PREFIX + "*"))
    assert not unit.exists(), "the emptied folder is removed"
    report = json.loads((out / "clusters.json").read_text())
    assert set(report["photos"]) == {f"party/{k}" for k in SPEC}
    assert len(report["runs"]) == 1

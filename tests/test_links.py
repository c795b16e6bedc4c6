"""Nothing outside the inbox is read through a link (issue 12 point 1).

A link whose target lies outside the inbox fails its job as input, naming the link and its
target; nothing of the target reaches an engine, a provider or outputs/. Links that stay inside
the inbox are followed, by design.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dropflow.engine import files
from dropflow.engine.errors import InputError
from tests.conftest import RunningDaemon
from tests.engines import read_runs

SECRET = b"root:x:0:0:the secret outside the inbox\n"


def _outputs(daemon: RunningDaemon) -> list[bytes]:
    return [p.read_bytes() for p in daemon.cfg.paths.outputs.rglob("*") if p.is_file()]


async def test_a_link_out_of_the_inbox_fails_as_input_and_is_never_read(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "passwd.txt"
    outside.parent.mkdir()
    outside.write_bytes(SECRET)
    link = daemon.cfg.paths.inbox / "record" / "x.txt"
    link.symlink_to(outside)

    [job] = await daemon.wait_status(1, ("failed",))
    assert job.error is not None and job.error["kind"] == "input"
    assert str(link) in job.error["message"] and str(outside) in job.error["message"]
    assert "copy the file into the inbox" in job.error["hint"]
    assert read_runs(daemon.cfg.paths.state) == [], "the engine never ran on it"
    assert not any(SECRET in data for data in _outputs(daemon))
    assert not job.content_hash.startswith(files.content_hash(outside)), "not even hashed"
    assert link.is_symlink(), "the link stays where it was dropped, with its reason beside it"

    # a retry does not read it either: the scheduler checks the inputs before every run
    assert await daemon.store.retry(job.id) == "queued"
    [again] = await daemon.wait_status(1, ("failed",))
    assert again.attempts >= 1 and "outside the inbox" in (again.error or {}).get("message", "")
    assert read_runs(daemon.cfg.paths.state) == []


async def test_a_folder_linked_from_outside_is_not_followed(daemon: RunningDaemon, tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "notes.txt").write_bytes(SECRET)
    (daemon.cfg.paths.inbox / "record" / "sub").symlink_to(outside, target_is_directory=True)
    # a file dropped after the link (renamed in whole, as a producer would): once its job is done,
    # the scan has seen the link too
    part = daemon.cfg.paths.inbox / "record" / "after.txt.part"
    part.write_bytes(b"after")
    part.rename(part.with_suffix(""))

    [job] = await daemon.wait_status(1, ("succeeded", "failed"))
    assert job.input_path.endswith("after.txt") and job.status == "succeeded"
    await daemon.wait_status(1, ("succeeded",))
    assert len(await daemon.store.list()) == 1, "nothing under the linked folder became a job"
    assert {r["job"] for r in read_runs(daemon.cfg.paths.state)} == {job.id}
    assert not any(SECRET in data for data in _outputs(daemon))


async def test_a_link_within_the_inbox_is_followed(daemon: RunningDaemon) -> None:
    inbox = daemon.cfg.paths.inbox
    (inbox / "shared").mkdir()
    (inbox / "shared" / "real.txt").write_bytes(b"inside")
    (inbox / "record" / "linked.txt").symlink_to(inbox / "shared" / "real.txt")

    [job] = await daemon.wait_status(1, ("succeeded",))
    assert job.error is None
    assert [r["event"] for r in read_runs(daemon.cfg.paths.state)] == ["start", "done"]


def test_check_inside_names_the_link_and_its_target(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    target = tmp_path / "t.jpg"
    target.write_bytes(b"x")
    link = root / "photo.jpg"
    link.symlink_to(target)
    with pytest.raises(InputError) as err:
        files.check_inside(link, root, what="roles photo")
    assert err.value.message.startswith("roles photo: ") and str(target) in err.value.message
    files.check_inside(root / "plain.jpg", root)  # no link: nothing to say
    inner = root / "inner.jpg"
    inner.symlink_to(link)  # a link to a link that leaves: resolved to the end
    assert files.link_outside(inner, root) == Path(os.path.realpath(target))

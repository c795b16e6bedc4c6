"""Nothing outside the inbox is read through a link (issue 12 point 1).

A link whose target lies outside the inbox fails its job as input, naming the link and its
target; nothing of the target reaches an engine, a provider or outputs/. Links that stay inside
the inbox are followed, by design.
"""

from __future__ import annotations

import asyncio
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

    jobs = await daemon.wait_status(1, ("succeeded", "failed"))
    await asyncio.sleep(3 * daemon.cfg.watch.settle_seconds)  # what was offered with it has settled too
    seen = [(j.input_path, j.status, j.error_message) for j in await daemon.store.list()]
    assert len(seen) == 1, f"nothing under the linked folder becomes a job: {seen}"
    [job] = jobs
    assert job.input_path.endswith("after.txt") and job.status == "succeeded", seen
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


def test_a_path_named_outside_without_a_link_is_refused_too(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    outside = tmp_path / "face.jpg"
    outside.write_bytes(b"x")
    with pytest.raises(InputError, match="lies outside the inbox"):
        files.check_inside(outside, root, what="reference photo of role 'Ann'")
    with pytest.raises(InputError, match="lies outside the inbox"):
        files.check_inside(root / ".." / "face.jpg", root)


def test_a_roles_photo_outside_what_the_job_may_read_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    from dropflow.engine.annotate.params import Role
    from dropflow.engine.annotate.sidecars import role_photo_parts

    inbox, prompts = tmp_path / "inbox", tmp_path / "prompts"
    inbox.mkdir()
    prompts.mkdir()
    secret = tmp_path / "private.jpg"
    Image.new("RGB", (32, 32)).save(secret)
    (inbox / "ann.jpg").symlink_to(secret)

    def check(path: Path, what: str = "") -> None:
        files.check_inside(path, inbox, prompts, what=what)

    for ref in (str(secret), "ann.jpg", "../private.jpg"):
        role = Role(name="Ann", photos=[ref])
        with pytest.raises(InputError, match="reference photo of role 'Ann'"):
            role_photo_parts([role], [inbox, prompts], 256, 80, check)
    Image.new("RGB", (32, 32)).save(inbox / "bob.jpg")
    parts = role_photo_parts([Role(name="Bob", photos=["bob.jpg"])], [inbox, prompts], 256, 80, check)
    assert len(parts) == 2, "a photo beside the video is read"


async def test_the_watcher_never_offers_what_lies_under_a_folder_linked_from_outside(tmp_path: Path) -> None:
    """The watcher's own events for the link (and, where it follows links, for files below it)
    offer nothing, as the scans do not descend into it."""
    from dropflow.daemon.core import config as cfgmod
    from dropflow.daemon.router import Router
    from dropflow.daemon.watcher import Watcher
    from dropflow.engine import registry
    from tests.conftest import write_config

    cfg = cfgmod.load(write_config(tmp_path / "p"))
    registry.load_plugin("tests.engines:RecordEngine")

    async def on_ready(_ready: object) -> None:
        raise AssertionError("nothing settles here")

    w = Watcher(cfg.watch, Router(cfg), on_ready)
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "notes.txt").write_bytes(SECRET)
    sub = cfg.paths.inbox / "record" / "sub"
    sub.symlink_to(outside, target_is_directory=True)
    w.hint(sub)
    w.hint(sub / "notes.txt")
    assert w.scan() == 0
    assert w.gate.pending == {}
    (cfg.paths.inbox / "record" / "plain.txt").write_bytes(b"x")  # the same watcher offers a file
    w.hint(cfg.paths.inbox / "record" / "plain.txt")
    assert list(w.gate.pending) == [cfg.paths.inbox / "record" / "plain.txt"]

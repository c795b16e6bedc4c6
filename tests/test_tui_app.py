"""The TUI driven by keys through Textual's Pilot, on a real store (and a real daemon where the
daemon must act): navigation, filter, every queue edit, live progress, daemon up/down, previews,
enqueue from the folder browser, the command palette and the help."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console
from textual import events
from textual.pilot import Pilot
from textual.widgets import OptionList, Static
from textual.widgets.tree import TreeNode

from dropflow.daemon.core.config import Config
from dropflow.daemon.core.jobs import NewJob
from dropflow.daemon.core.store import Store, owner_id
from dropflow.tui.app import DropflowApp
from dropflow.tui.screens.detail import JobDetailScreen
from dropflow.tui.screens.dialogs import ConfirmScreen, EngineChoiceScreen
from dropflow.tui.screens.folders import FoldersScreen
from dropflow.tui.screens.help import HelpScreen
from dropflow.tui.screens.queue import QueueScreen
from dropflow.tui.widgets.folder_tree import FolderTree
from dropflow.tui.widgets.header import StatusHeader
from dropflow.tui.widgets.job_table import JobTable
from dropflow.tui.widgets.preview import PreviewPane
from tests.conftest import RunningDaemon

# textual-image 0.12 reads pixels with Image.getdata, deprecated in Pillow 13 (gone in 14)
pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


def make_app(cfg: Config) -> DropflowApp:
    return DropflowApp(cfg, images="unicode", poll_interval=0.05)


async def until(
    pilot: Pilot[None], predicate: Callable[[], object], what: str, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await pilot.pause(0.02)


def table(app: DropflowApp) -> JobTable:
    return app.screen.query_one(JobTable)


def visible_ids(app: DropflowApp) -> list[int]:
    return [r.id for r in table(app).window.visible]


def header(app: DropflowApp) -> str:
    return app.screen.query_one(StatusHeader).render().plain


async def queue_ready(pilot: Pilot[None]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, QueueScreen) and table(app).loads > 0, "queue loaded")


async def add_jobs(cfg: Config, n: int, **kw: object) -> list[int]:
    async with Store.open(cfg.paths.database) as store:
        res = await store.insert_jobs(
            [
                NewJob("record", "record", str(cfg.paths.inbox / "record" / f"f{i}.txt"), f"h{i}", **kw)
                for i in range(n)
            ]
        )
    return [r.job_id for r in res]


async def select_job(pilot: Pilot[None], job_id: int) -> None:
    """Put the cursor on a job with the keyboard: filter by its id."""
    await pilot.press("slash", *f"id:{job_id}", "enter")
    await until(pilot, lambda: visible_ids(pilot.app) == [job_id], f"job {job_id} alone in view")


async def test_navigation_between_queue_detail_folders_and_help(project: Config) -> None:
    await add_jobs(project, 30)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        assert visible_ids(app)[:3] == [30, 29, 28] and len(visible_ids(app)) == 19
        await pilot.press("down", "down", "j")
        assert table(app).selected.id == 27
        await pilot.press("pagedown")
        assert table(app).selected.id == 27 - 19
        await pilot.press("G")
        await until(pilot, lambda: table(app).selected is not None and table(app).selected.id == 1, "end")
        await pilot.press("g", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, JobDetailScreen), "detail opened")
        assert app.screen.job_id == 29
        await until(pilot, lambda: app.screen.job is not None, "job read")
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("f")
        assert isinstance(app.screen, FoldersScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)


async def test_filter_narrows_the_queue_and_escape_clears_it(project: Config) -> None:
    ids = await add_jobs(project, 12)
    async with Store.open(project.paths.database) as store:
        for job_id in ids[::3]:
            await store.db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", (job_id,))
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await pilot.press("slash", *"failed", "enter")
        await until(pilot, lambda: visible_ids(app) == sorted(ids[::3], reverse=True), "failed jobs only")
        assert "filter “failed”" in _plain(app, app.screen.query_one("#job-info", Static).content)
        await until(
            pilot,
            lambda: "4 match" in _plain(app, app.screen.query_one("#job-info", Static).content),
            "the filter's match count shown",
        )
        await pilot.press("slash", "ctrl+u", *"f1", "enter")  # a piece of the path: f1.txt, f10.txt, f11.txt
        await until(pilot, lambda: visible_ids(app) == [12, 11, 2], "path filter")
        await pilot.press("escape")
        await until(pilot, lambda: len(visible_ids(app)) == 12, "filter cleared")
        await pilot.press("s")  # sort by the next column: priority
        assert table(app).query_spec.sort.column == "priority"

        # keys that arrive in one burst (typeahead over SSH) all land in the filter, in order,
        # and none of them fires a binding (f: folders, c: cancel, ...)
        for key, char in [("slash", "/"), *((c, c) for c in "failed"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await until(pilot, lambda: visible_ids(app) == sorted(ids[::3], reverse=True), "burst filter")
        assert isinstance(app.screen, QueueScreen) and table(app).query_spec.filter.text == "failed"
        assert all(j.status != "cancelled" for j in await app.store.list())


async def test_every_queue_edit_reaches_the_store_with_the_daemon_down(project: Config) -> None:
    ids = await add_jobs(project, 6)
    async with Store.open(project.paths.database) as store:
        await store.db.execute(
            "UPDATE jobs SET status = 'failed', error_kind = 'input' WHERE id = ?", (ids[2],)
        )
    app = make_app(project)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await queue_ready(pilot)
        await until(pilot, lambda: "daemon down" in header(app), "daemon down in the header")

        async def status(job_id: int) -> str | None:
            job = await app.store.get(job_id)
            return job.status if job else None

        await select_job(pilot, ids[0])
        await pilot.press("p")
        await until(pilot, lambda: table(app).selected.status == "paused", "paused shown")
        assert await status(ids[0]) == "paused"
        await pilot.press("p")
        await until(pilot, lambda: table(app).selected.status == "queued", "resumed shown")
        assert await status(ids[0]) == "queued"

        await select_job(pilot, ids[1])
        await pilot.press("plus")
        await until(pilot, lambda: table(app).selected.priority == 1, "priority +1")
        for _ in range(4):  # a burst of presses (keys arrive together over SSH): none is lost
            app.screen.action_edit("priority-up")
        await until(pilot, lambda: table(app).selected.priority == 5, "priority +5")
        await pilot.press("minus")
        await until(pilot, lambda: table(app).selected.priority == 4, "priority 4")
        assert (await app.store.get(ids[1])).priority == 4

        await select_job(pilot, ids[2])
        await pilot.press("r")
        await until(pilot, lambda: table(app).selected.status == "queued", "retried")
        assert (await app.store.get(ids[2])).error_kind is None

        await select_job(pilot, ids[3])
        await pilot.press("c")  # a queued job is cancelled at once: nothing in flight to lose
        await until(pilot, lambda: table(app).selected.status == "cancelled", "cancelled")
        assert await status(ids[3]) == "cancelled"

        await select_job(pilot, ids[4])
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, QueueScreen)
        assert await status(ids[4]) == "queued", "no means no"
        await pilot.press("x")
        await pilot.press("y")
        await until(pilot, lambda: visible_ids(app) == [], "removed from view")
        assert await status(ids[4]) is None
        messages = [n.message for n in app._notifications]
        assert any("removed" in m for m in messages), messages


async def test_cancel_of_a_running_job_is_applied_by_the_daemon(
    daemon: RunningDaemon, project: Config
) -> None:
    src = project.paths.inbox.parent / "elsewhere" / "slow.txt"
    src.parent.mkdir(parents=True)
    src.write_text("slow")
    await daemon.store.insert_jobs(
        [NewJob("record", "record", str(src), "slow", source="submit", params={"seconds": 60})]
    )
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await until(pilot, lambda: "daemon up" in header(app), "daemon up in the header")
        await until(pilot, lambda: table(app).selected and table(app).selected.status == "running", "running")
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen), "cancel of work in flight asks first"
        await pilot.press("y")
        await until(pilot, lambda: table(app).selected.status == "cancelled", "the daemon cancelled it")
        job = await daemon.store.get(1)
        assert job is not None and job.status == "cancelled" and job.finished_at is not None


async def test_progress_updates_live(project: Config) -> None:
    [job_id] = await add_jobs(project, 1)
    owner = owner_id()
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot, Store.open(project.paths.database) as worker:
        await queue_ready(pilot)
        [claimed] = await worker.claim(owner, slots=1, engine_slots={}, lease_seconds=30)
        assert claimed.id == job_id
        for fraction in (0.25, 0.8):
            await worker.set_progress(job_id, owner, fraction, f"step {fraction}")
            await until(pilot, lambda f=fraction: table(app).selected.progress == f, f"progress {fraction}")  # type: ignore[misc]
        line = table(app).render_line(1).text
        assert "running" in line and "80%" in line
        assert "step 0.8" in _plain(app, app.screen.query_one("#job-info", Static).content)


async def test_a_finished_job_shows_no_stale_progress(project: Config) -> None:
    """A job paused mid-run and then cancelled, and one that failed mid-run, keep their last
    progress in the store ("segment 3/5", 60%); their rows must not show it as if it were live."""
    [cancelled, failed, running] = await add_jobs(project, 3)
    owner = owner_id()
    async with Store.open(project.paths.database) as worker:
        claimed = await worker.claim(owner, slots=3, engine_slots={}, lease_seconds=30)
        assert sorted(j.id for j in claimed) == [cancelled, failed, running]
        for job_id in (cancelled, failed, running):
            await worker.set_progress(job_id, owner, 0.6, "segment 3/5")
        await worker.release(cancelled, owner, to="paused", message="paused by user")
        assert await worker.cancel(cancelled) == "cancelled"
        error = {"kind": "provider", "message": "the provider refused", "hint": None}
        await worker.fail(failed, owner, error, retry_at=None)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        info = app.screen.query_one("#job-info", Static)
        for job_id, status in ((cancelled, "cancelled"), (failed, "failed")):
            await select_job(pilot, job_id)
            await until(pilot, lambda j=job_id: f"#{j} " in _plain(app, info.content), "info line")  # type: ignore[misc]
            line = table(app).render_line(1).text
            assert status in line and "60%" not in line, line
            assert "segment 3/5" not in _plain(app, info.content)
        await select_job(pilot, running)  # work still running shows its progress
        await until(pilot, lambda: "segment 3/5" in _plain(app, info.content), "live progress")
        assert "60%" in table(app).render_line(1).text


async def test_header_follows_the_daemon_up_and_down(project: Config) -> None:
    await add_jobs(project, 3)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot, Store.open(project.paths.database) as other:
        await queue_ready(pilot)
        await until(
            pilot, lambda: "daemon down" in header(app) and "queued 3" in header(app), "down, 3 queued"
        )
        me = owner_id()
        await other.register_daemon(me, "test")
        await until(pilot, lambda: "daemon up" in header(app), "up")
        await other.stop_daemon(me)
        await until(pilot, lambda: "daemon down" in header(app), "down again")


async def test_the_header_says_when_outputs_are_offline_placeholders(project: Config) -> None:
    assert project.providers.default == "offline"
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await until(pilot, lambda: "OFFLINE" in header(app), "offline shown")
    # auto with a key set: dashscope, no banner
    project.providers.default = "auto"
    project.providers.dashscope.api_key = SecretStr("sk-test")
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await until(pilot, lambda: "daemon down" in header(app), "header drawn")
        assert "OFFLINE" not in header(app)


async def walk_to(pilot: Pilot[None], target: Path) -> None:
    """Move the folder tree's cursor to `target` with the arrow keys alone."""
    tree = pilot.app.screen.query_one(FolderTree)

    def shown(node: TreeNode[Path]) -> TreeNode[Path] | None:
        if node.data == target and node.line >= 0:
            return node
        return next((hit for c in node.children if (hit := shown(c)) is not None), None)

    for _ in range(60):
        node = tree.cursor_node
        if node is not None and node.data == target:
            return
        goal = shown(tree.root)
        if goal is not None:
            await pilot.press("up" if goal.line < tree.cursor_line else "down")
        elif node is not None and node.data in target.parents and not node.is_expanded:
            await pilot.press("right")
            await until(pilot, lambda n=node: any(c.data is not None for c in n.children), "listed")  # type: ignore[misc]
        else:
            await pilot.press("down")
        await pilot.pause(0.02)
    raise AssertionError(f"{target} not reached")


async def test_folder_previews_of_an_image_and_a_json_output_and_enqueue(project: Config) -> None:
    from PIL import Image

    out = project.paths.outputs / "record"
    out.mkdir(parents=True)
    Image.new("RGB", (120, 80), (10, 200, 10)).save(out / "sheet.png")
    (out / "clip.json").write_text('{"summary": "a dog on a beach", "segments": []}')
    (out / "more.txt").write_text("again")
    app = make_app(project)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await queue_ready(pilot)
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, FoldersScreen), "folders")
        pane = app.screen.query_one(PreviewPane)
        await walk_to(pilot, out / "sheet.png")
        await until(pilot, lambda: pane.current is not None and pane.current.kind == "image", "image preview")
        from textual_image.widget import UnicodeImage

        assert len(pane.query(UnicodeImage)) == 1, "the image is drawn (as text without a terminal)"
        assert "120x80" in pane.current.title
        await walk_to(pilot, out / "clip.json")
        await until(pilot, lambda: pane.current is not None and pane.current.kind == "text", "json preview")
        assert '"summary": "a dog on a beach"' in pane.current.body.code
        await until(
            pilot, lambda: project.paths.inbox / "record" in app.screen.query_one(FolderTree).labels, "counts"
        )
        labels = app.screen.query_one(FolderTree).labels
        assert labels[project.paths.inbox / "record"] == "0 pending · 0 archived"
        assert labels[out] == "3 files"

        await walk_to(pilot, out / "more.txt")
        await pilot.press("a")
        assert isinstance(app.screen, EngineChoiceScreen)
        await pilot.press("enter")  # the preselected choice: "auto", as `dropflow submit` without --engine
        async with Store.open(project.paths.database) as store:

            async def queued() -> list[str]:
                return [j.input_path for j in await store.list()]

            deadline = time.monotonic() + 15
            while str(out / "more.txt") not in await queued():
                assert time.monotonic() < deadline, "enqueued job never appeared"
                await pilot.pause(0.05)
            [job] = await store.list()
            assert job.source == "submit" and job.engine == "record"
        await until(
            pilot, lambda: any("queued" in n.message for n in app._notifications), "told what happened"
        )


async def test_job_detail_shows_error_hint_params_events_output_preview_and_log(project: Config) -> None:
    out = project.paths.outputs / "record"
    out.mkdir(parents=True)
    (out / "result.json").write_text('{"caption": "hello"}')
    [bad, good] = await add_jobs(project, 2, params={"note": "x"})
    async with Store.open(project.paths.database) as store:
        await store.db.execute(
            "UPDATE jobs SET status = 'failed', error_kind = 'input', error_message = 'f0.txt is not readable',"
            " error_hint = 'drop a valid file' WHERE id = ?",
            (bad,),
        )
        await store.db.execute(
            "UPDATE jobs SET status = 'succeeded', outputs = ? WHERE id = ?",
            (f'["{out / "result.json"}"]', good),
        )
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await select_job(pilot, bad)
        info = _plain(app, app.screen.query_one("#job-info", Static).content)
        assert "f0.txt is not readable" in info and "drop a valid file" in info
        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None, "detail"
        )
        screen = app.screen
        text = _plain(app, screen.query_one("#overview-body", Static).content)
        assert "input: f0.txt is not readable" in text and "fix: drop a valid file" in text
        assert '"note": "x"' in text
        await pilot.press("2")
        assert "queued: " in _plain(app, screen.query_one("#events-body", Static).content)
        await pilot.press("escape")
        await select_job(pilot, good)
        await pilot.press("enter", "3")
        await until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None, "detail 2"
        )
        pane = app.screen.query_one(PreviewPane)
        await until(pilot, lambda: pane.current is not None, "output previewed")
        assert '"caption": "hello"' in pane.current.body.code

        # the Log tab follows the daemon's log file: lines naming this job, as they are written
        log = project.paths.logs / "dropflow.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"x INFO dropflow.scheduler: job {good} (record) started\nx INFO job {bad} other\n")
        await pilot.press("4")
        body = app.screen.query_one("#log-body", Static)
        await until(pilot, lambda: f"job {good} (record) started" in _plain(app, body.content), "log tail")
        assert f"job {bad} other" not in _plain(app, body.content)
        with log.open("a") as fh:
            fh.write(f"x INFO dropflow.scheduler: job {good} (record) succeeded: 1 output(s)\n")
        await until(pilot, lambda: "succeeded: 1 output(s)" in _plain(app, body.content), "new line followed")


async def test_log_tab_keeps_following_when_an_older_read_ends_last(
    project: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow read of the log (a big file, a busy disk) must not put older lines back over newer
    ones: the tab shows the file as it is now, with no reopening of the tab."""
    import itertools
    import threading

    from dropflow.tui.screens import detail

    [job_id] = await add_jobs(project, 1)
    log = project.paths.logs / "dropflow.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"x INFO job {job_id} started\n")
    first_done = threading.Event()
    reads = itertools.count()
    real = detail.job_lines

    def slow_first_read(*args: object, **kwargs: object) -> list[str]:
        lines = real(*args, **kwargs)  # type: ignore[arg-type]
        if next(reads) == 0:
            time.sleep(2.0)  # the file grows meanwhile, and a newer read ends first
            first_done.set()
        return lines

    monkeypatch.setattr(detail, "job_lines", slow_first_read)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None, "detail"
        )
        await pilot.press("4")
        await pilot.pause(0.2)
        with log.open("a") as fh:
            fh.write(f"x INFO job {job_id} succeeded: 1 output(s)\n")
        body = app.screen.query_one("#log-body", Static)
        await until(pilot, first_done.is_set, "the slow read ended")
        await pilot.pause(0.3)
        await until(
            pilot, lambda: "succeeded: 1 output(s)" in _plain(app, body.content), "newest lines shown"
        )
        await pilot.pause(1.5)
        assert "succeeded: 1 output(s)" in _plain(app, body.content), "and kept"


def _plain(app: DropflowApp, renderable: object) -> str:
    """What a renderable shows, as plain text (no colours)."""
    console = Console(width=200, color_system=None, file=io.StringIO())
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


async def test_command_palette_pauses_all_engines_and_help_lists_the_keys(project: Config) -> None:
    await add_jobs(project, 1)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"Pause all engines")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.stats is not None and app.stats.paused_all, "paused in the store")
        assert "all paused" in header(app)
        await pilot.press("P")  # and the key undoes it
        await until(pilot, lambda: app.stats is not None and not app.stats.paused_all, "resumed")
        await pilot.press("question_mark")
        help_text = "\n".join(_plain(app, s.content) for s in app.screen.query(Static))
        for what in (
            "Filter",
            "Cancel",
            "Retry",
            "Remove",
            "Priority +1",
            "Pause",
            "Enqueue",
            "Detail",
            "Quit",
        ):
            assert what in help_text, what


async def test_resume_all_engines_in_the_palette_also_releases_each_engine_s_own_pause(
    project: Config,
) -> None:
    await add_jobs(project, 1)
    async with Store.open(project.paths.database) as store:
        await store.pause_engine(None, True)
        await store.pause_engine("record", True)
        await store.pause_engine("cluster", True)
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await until(pilot, lambda: app.stats is not None and app.stats.paused_all, "paused read")
        await pilot.press("ctrl+p")
        await pilot.press(*"Resume all engines")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: app.stats is not None and not app.stats.paused_all, "resumed")
        await until(pilot, lambda: app.stats is not None and app.stats.paused_engines == (), "engines too")
        assert await app.store.paused_engines() == (False, set())


async def test_j_and_k_move_in_every_list(project: Config) -> None:
    out = project.paths.outputs / "record"
    out.mkdir(parents=True)
    for name in ("a.json", "b.json", "c.json"):
        (out / name).write_text("{}")
    [job_id] = await add_jobs(project, 1)
    async with Store.open(project.paths.database) as store:
        outputs = json.dumps([str(out / n) for n in ("a.json", "b.json", "c.json")])
        await store.db.execute(
            "UPDATE jobs SET status = 'succeeded', outputs = ? WHERE id = ?", (outputs, job_id)
        )
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await queue_ready(pilot)
        await pilot.press("enter")
        await until(
            pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.job is not None, "detail"
        )
        await pilot.press("3")
        outputs_list = app.screen.query_one("#outputs-list", OptionList)
        await until(pilot, lambda: outputs_list.highlighted == 0, "first output highlighted")
        await pilot.press("j", "j")
        assert outputs_list.highlighted == 2
        await pilot.press("k")
        assert outputs_list.highlighted == 1
        await pilot.press("escape", "f")
        await until(pilot, lambda: isinstance(app.screen, FoldersScreen), "folders")
        tree = app.screen.query_one(FolderTree)
        await walk_to(pilot, project.paths.inbox)
        line = tree.cursor_line
        await pilot.press("j")
        assert tree.cursor_line == line + 1
        await pilot.press("k")
        assert tree.cursor_line == line
        await walk_to(pilot, out / "a.json")
        await pilot.press("a")
        assert isinstance(app.screen, EngineChoiceScreen)
        engines = app.screen.query_one(OptionList)
        start = engines.highlighted
        assert start is not None
        await pilot.press("j")
        assert engines.highlighted == start + 1
        await pilot.press("k")
        assert engines.highlighted == start


async def test_a_store_that_cannot_be_opened_ends_the_app_with_the_reason(
    project: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    project.paths.state.parent.mkdir(parents=True, exist_ok=True)
    project.paths.state.write_text("a file where the state folder should be")
    app = make_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
    assert app.return_code == 1
    err = capsys.readouterr().err
    assert "cannot open the job store" in err and "File exists" in err

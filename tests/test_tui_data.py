"""The TUI's read side without a terminal: keyset windows, filters, paging, stats, daemon state,
folder counts, previews and the log tail, all on real SQLite and real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dropflow.daemon.core.jobs import NewJob
from dropflow.daemon.core.store import Store, owner_id
from dropflow.engine.files import error_sidecar
from dropflow.tui.data import JobRow, StoreReader
from dropflow.tui.folders import list_folder, tally
from dropflow.tui.format import shown_progress
from dropflow.tui.logtail import job_lines
from dropflow.tui.preview import load_preview
from dropflow.tui.query import SORT_COLUMNS, Filter, JobQuery, Sort, parse_filter
from dropflow.tui.window import JobWindow

ENGINES = ("annotate", "dataset", "cluster")
STATES = ("queued", "running", "waiting", "paused", "succeeded", "failed", "cancelled")


async def _fill(store: Store, n: int) -> None:
    """`n` jobs whose sortable columns repeat values, so every order needs its id tie-break."""
    await store.insert_jobs(
        [
            NewJob(
                engine=ENGINES[i % 3],
                route=ENGINES[i % 3],
                input_path=f"/in/{ENGINES[i % 3]}/clip_{i % 7}_{i}.mp4",
                content_hash=f"h{i}",
                priority=i % 4,
            )
            for i in range(n)
        ]
    )
    for i in range(1, n + 1):
        await store.db.execute(
            "UPDATE jobs SET status = ?, progress = ?, attempts = ?, tokens_in = ?, tokens_out = ? WHERE id = ?",
            (STATES[i % 7], (i % 5) / 4, i % 3, (i % 6) * 100, i % 2, i),
        )


def _oracle(rows: list[dict[str, Any]], sort: Sort) -> list[int]:
    """The full order computed in Python: what paging page by page must reproduce."""
    rank = ("running", "waiting", "queued", "paused", "failed", "cancelled", "succeeded")
    value = {
        "id": lambda r: r["id"],
        "priority": lambda r: r["priority"],
        "status": lambda r: rank.index(r["status"]),
        "engine": lambda r: r["engine"],
        "input": lambda r: r["input_path"],
        "progress": lambda r: r["progress"],
        "attempts": lambda r: r["attempts"],
        "tokens": lambda r: r["tokens_in"] + r["tokens_out"],
    }[sort.column]
    desc = sort.terms[0][1]
    # two stable sorts: by id (in the primary's direction, as the tie-break), then by the primary
    out = sorted(rows, key=lambda r: r["id"], reverse=desc)
    out = sorted(out, key=value, reverse=desc)
    return [r["id"] for r in out]


@pytest.mark.parametrize("reverse", [False, True])
async def test_keyset_pages_reproduce_every_sort_forwards_and_backwards(
    tmp_path: Path, reverse: bool
) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        await _fill(store, 61)
        cur = await store.db.execute("SELECT * FROM jobs")
        all_rows = [dict(r) for r in await cur.fetchall()]
        reader = StoreReader(store)
        for col in SORT_COLUMNS:
            query = JobQuery(sort=Sort(col.name, reverse))
            terms = len(query.sort.terms)
            expected = _oracle(all_rows, query.sort)
            page = await reader.window(query, "start", None, 7)
            seen = [r.id for r in page]
            while page:
                page = await reader.window(query, "after", page[-1].key(terms), 7)
                seen += [r.id for r in page]
            assert seen == expected, col.name
            page = await reader.window(query, "end", None, 5)
            back = [r.id for r in page]
            while page:
                page = await reader.window(query, "before", page[0].key(terms), 5)
                back = [r.id for r in page] + back
            assert back == expected, col.name
            # a refresh re-reads from the first row shown, that row included
            anchor_row = next(
                r for r in await reader.window(query, "start", None, 20) if r.id == expected[10]
            )
            again = await reader.window(query, "from", anchor_row.key(terms), 3)
            assert [r.id for r in again] == expected[10:13], col.name


async def test_filter_words_statuses_engines_ids_and_literal_wildcards(tmp_path: Path) -> None:
    parsed = parse_filter("failed annotate clip_3 id:12 batch:b1 status:active", ENGINES)
    assert parsed.statuses == {"failed", "queued", "running", "waiting", "paused"}
    assert parsed.engines == {"annotate"} and parsed.words == ("clip_3",)
    assert parsed.ids == {12} and parsed.batches == {"b1"}
    assert parse_filter("status:nope").problems == ("no status 'nope'",)
    assert parse_filter("   ").empty
    async with Store.open(tmp_path / "s.db") as store:
        await _fill(store, 40)
        await store.insert_jobs([NewJob("dataset", "dataset", "/in/100%_done.jpg", "pct")])
        reader = StoreReader(store)

        async def ids(text: str) -> list[int]:
            return [
                r.id for r in await reader.window(JobQuery(parse_filter(text, ENGINES)), "start", None, 100)
            ]

        failed = await ids("failed")
        cur = await store.db.execute("SELECT id FROM jobs WHERE status = 'failed' ORDER BY id DESC")
        assert failed == [r[0] for r in await cur.fetchall()] and failed
        both = await ids("failed annotate")
        assert both and all(i in failed for i in both)
        engines = {
            r.engine
            for r in await reader.window(
                JobQuery(parse_filter("failed annotate", ENGINES)), "start", None, 100
            )
        }
        assert engines == {"annotate"}
        # % and _ are matched literally, not as LIKE wildcards
        assert len(await ids("100%_")) == 1
        assert await ids("0%_") == await ids("100%_done")
        assert await ids("clip_3_10") == [11]  # input clip_{i%7}_{i} with i = 10 is job 11
        assert await reader.count_matching(JobQuery(parse_filter("failed"))) == len(failed)


async def _drive(window: JobWindow, reader: StoreReader, query: JobQuery) -> int:
    """Run every read the window asks for, as the widget's worker does. Returns how many ran."""
    n = 0
    while (fetch := window.next_fetch()) is not None:
        rows = await reader.window(query, fetch.kind, fetch.anchor, fetch.limit)
        window.apply(fetch, rows)
        n += 1
        assert n < 50, "the window keeps asking"
    return n


def _selected_id(w: JobWindow) -> int | None:
    return w.selected.id if w.selected is not None else None


async def test_window_scrolls_through_everything_with_a_bounded_buffer(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        await _fill(store, 500)
        reader = StoreReader(store)
        query = JobQuery()
        w = JobWindow(page=10)
        await _drive(w, reader, query)
        assert [r.id for r in w.visible] == list(range(500, 490, -1))
        for expected in range(500, 0, -1):
            assert w.selected is not None and w.selected.id == expected
            assert len(w.rows) <= w.page * w.MAX_PAGES, "the buffer stays bounded"
            w.move(1)
            await _drive(w, reader, query)
        assert w.at_end and w.selected.id == 1
        for _ in range(25):  # PageUp x 25
            w.move(-w.page)
            await _drive(w, reader, query)
        assert w.selected.id == 251
        assert w.selected in w.visible
        w.home()
        await _drive(w, reader, query)
        assert w.selected.id == 500 and w.at_start
        w.reset()  # a new filter: until its rows arrive, nothing is selected (keys act on nothing)
        assert w.visible and w.selected is None
        await _drive(w, reader, query)
        assert _selected_id(w) == 500
        w.end()
        await _drive(w, reader, query)
        assert _selected_id(w) == 1 and [r.id for r in w.visible][-1] == 1


async def test_window_refresh_keeps_the_selected_job_and_shows_new_ones_at_the_head(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        await _fill(store, 50)
        reader = StoreReader(store)
        query = JobQuery()
        w = JobWindow(page=10)
        await _drive(w, reader, query)
        w.move(3)
        assert w.selected.id == 47
        await store.insert_jobs([NewJob("dataset", "dataset", "/in/new.jpg", "new")])
        w.invalidate()
        await _drive(w, reader, query)
        assert w.visible[0].id == 51, "watching the head: the new job comes into view"
        assert w.selected.id == 47, "and the selection stays on the same job"
        # scrolled away from the head, the view stays put while jobs arrive
        w.move(20)
        await _drive(w, reader, query)
        top = w.visible[0].id
        await store.insert_jobs([NewJob("dataset", "dataset", "/in/newer.jpg", "newer")])
        await store.remove(w.selected.id)
        w.invalidate()
        await _drive(w, reader, query)
        assert w.visible[0].id == top
        assert w.selected is not None


async def test_window_on_an_empty_result_and_a_stale_read(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        reader = StoreReader(store)
        w = JobWindow(page=5)
        query = JobQuery(Filter("x", words=("nothing-matches",)))
        await _drive(w, reader, query)
        assert w.loaded and w.rows == [] and w.selected is None
        w.move(3)  # no rows: nothing to move to, nothing breaks
        stale = w.next_fetch()
        assert stale is None
        w.invalidate()
        fetch = w.next_fetch()
        assert fetch is not None
        w.reset()  # a new filter arrives before the old read came back
        assert w.apply(fetch, []) is False
        # a read that failed (a locked database) is asked for again, unless something newer came
        again = w.next_fetch()
        assert again is not None and again.purpose == "reset" and w.next_fetch() is None
        w.retry(again)
        assert w.next_fetch() == again
        w.reset()
        w.next_fetch()
        w.retry(again)
        assert w.next_fetch() is None, "a stale failure is not retried"


async def test_stats_counts_throughput_and_tokens_today(tmp_path: Path) -> None:
    now = time.time()
    async with Store.open(tmp_path / "s.db") as store:
        await _fill(store, 70)
        await store.db.execute("UPDATE jobs SET finished_at = NULL")
        # three succeeded a minute ago, one an hour ago; one finished yesterday
        for job_id, at in (
            (5, now - 60),
            (12, now - 60),
            (19, now - 60),
            (26, now - 3600),
            (33, now - 2 * 86400),
        ):
            await store.db.execute(
                "UPDATE jobs SET status = 'succeeded', finished_at = ?, tokens_in = 100, tokens_out = 5 WHERE id = ?",
                (at, job_id),
            )
        await store.pause_engine("dataset", True)
        stats = await StoreReader(store, clock=lambda: now).stats()
        cur = await store.db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        assert stats.counts == {**dict.fromkeys(STATES, 0), **{r[0]: r[1] for r in await cur.fetchall()}}
        assert stats.total == 70
        assert stats.done_last_10min == 3
        midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
        expected_tokens = 105 * sum(1 for at in (now - 60, now - 60, now - 60, now - 3600) if at >= midnight)
        assert stats.tokens_today == expected_tokens
        assert stats.paused_engines == ("dataset",) and not stats.paused_all
        # a job the offline provider answered spent nothing: its simulated tokens are not spend
        await store.db.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = ?, tokens_in = 900, tokens_out = 9,"
            " provider = 'offline' WHERE id = 40",
            (now - 30,),
        )
        stats = await StoreReader(store, clock=lambda: now).stats()
        assert stats.tokens_today == expected_tokens


async def test_daemon_state_up_down_stale_and_dead_pid(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        reader = StoreReader(store, stale_after=30)
        assert not (await reader.daemon_state()).up
        me = owner_id()
        await store.register_daemon(me, "test")
        state = await reader.daemon_state()
        assert state.up and state.pid == os.getpid() and state.started_at is not None
        # a daemon on this host whose process is gone is down at once, not a lease later
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        dead = f"{me.split(':')[0]}:{int(gone.stdout)}:1"
        await store.stop_daemon(me)
        await store.register_daemon(dead, "test")
        assert not (await reader.daemon_state()).up
        # silent for longer than stale_after: down, and the header can say when it was last seen
        await store.db.execute(
            "UPDATE daemons SET stopped_at = NULL, heartbeat_at = ? WHERE owner = ?", (0, me)
        )
        state = await reader.daemon_state()
        assert not state.up and state.last_seen is not None


def test_folder_listing_and_capped_counts(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "b_dir").mkdir(parents=True)
    for name in ("z.jpg", "a.jpg", ".hidden", "clip.mp4.part", "bad.jpg", "bad.jpg.error.txt", "README.md"):
        (inbox / name).write_text("x")
    (inbox / "b_dir" / "deep.jpg").write_text("x")
    entries, more = list_folder(inbox)
    assert [e.path.name for e in entries][:1] == ["b_dir"], "folders first"
    assert ".hidden" not in [e.path.name for e in entries] and more == 0
    entries, more = list_folder(inbox, limit=2)
    assert len(entries) == 2 and more == 5
    t = tally(inbox, inbox=True)
    # a.jpg, z.jpg, b_dir/deep.jpg pending; bad.jpg failed; temp, hidden and README ignored
    assert (t.files, t.failed, t.capped) == (3, 1, False)
    capped = tally(inbox, cap=3)
    assert capped.capped and capped.show(capped.files).endswith("+")


def test_a_failed_folder_unit_counts_as_one_failure_and_none_of_its_files_as_pending(tmp_path: Path) -> None:
    """The cluster inbox: a unit is a folder (or a ZIP); a failed one has `<name>.error.txt`
    beside it. Its photos are not pending, and it is one failure, not one per photo."""
    cluster = tmp_path / "inbox" / "cluster"
    for folder, photos in (("party", 3), ("trip", 2)):
        (cluster / folder / "sub").mkdir(parents=True)
        for i in range(photos):
            (cluster / folder / "sub" / f"p{i}.jpg").write_text("x")
    (cluster / "party.error.txt").write_text("no photos could be read")
    (cluster / "old.zip").write_text("x")
    (cluster / "old.zip.error.txt").write_text("an entry climbs out with ..")
    long_name = "y" * 250 + ".zip"  # its sidecar has a shortened, hashed name
    (cluster / long_name).write_text("x")
    error_sidecar(cluster / long_name).write_text("too many entries")
    (cluster / "gone.zip.error.txt").write_text("its input was removed by hand")
    t = tally(cluster, inbox=True)
    # pending: trip's 2 photos; failed: party/, old.zip, the long-named ZIP, and gone.zip's sidecar
    assert (t.files, t.failed) == (2, 4)


def test_a_finished_job_shows_no_stale_progress() -> None:
    # a cancel or a failure leaves the last run's progress in the store
    assert shown_progress("cancelled", 0.6, "segment 3/5") == (None, "")
    assert shown_progress("failed", 0.6, "segment 3/5") == (None, "")
    assert shown_progress("succeeded", 0.9, "3 persons, 40 photos") == (1.0, "3 persons, 40 photos")
    for live in ("queued", "running", "waiting", "paused"):
        assert shown_progress(live, 0.6, "segment 3/5") == (0.6, "segment 3/5")


def test_previews_of_image_json_jsonl_text_and_bad_files(tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "sheet.png"
    Image.new("RGB", (2000, 1000), (200, 30, 30)).save(img)
    p = load_preview(img)
    assert p.kind == "image" and "2000x1000" in p.title and max(p.image.size) <= 640

    doc = tmp_path / "clip.json"
    doc.write_text(json.dumps({"summary": "a dog", "segments": [{"start": 0, "caption": "walks"}]}))
    p = load_preview(doc)
    assert p.kind == "text" and "object, 2 keys" in p.title
    assert '"caption": "walks"' in p.body.code

    lines = tmp_path / "train.jsonl"
    lines.write_text("\n".join(json.dumps({"i": i}) for i in range(60)) + "\nnot json\n")
    p = load_preview(lines)
    assert "first 40 records" in p.title and "more records follow" in p.title

    (tmp_path / "broken.json").write_text("{nope")
    assert "invalid JSON" in load_preview(tmp_path / "broken.json").title
    (tmp_path / "fake.jpg").write_bytes(b"not an image")
    bad = load_preview(tmp_path / "fake.jpg")
    assert bad.kind == "error" and "not a readable image" in str(bad.body)
    (tmp_path / "run.out").write_text("plain words\n")
    assert load_preview(tmp_path / "run.out").kind == "text", "text under an unknown suffix is sniffed"
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 100)
    assert load_preview(tmp_path / "blob.bin").kind == "info"
    folder = tmp_path / "person_01"
    folder.mkdir()
    Image.new("RGB", (300, 300)).save(folder / "contact_sheet.jpg")
    assert load_preview(folder).kind == "image", "a folder with a contact sheet previews the sheet"


def test_log_tail_keeps_only_the_jobs_lines(tmp_path: Path) -> None:
    log = tmp_path / "dropflow.log"
    log.write_text(
        "x INFO dropflow.scheduler: job 12 (annotate) started: /in/a.mp4\n"
        "x INFO dropflow.scheduler: job 123 (annotate) started: /in/b.mp4\n"
        "x INFO dropflow.engine.annotate.engine: segment 3 of a.mp4 done\n"
        "x INFO dropflow.scheduler: job 12 (annotate) succeeded: 2 output(s)\n"
    )
    lines = job_lines(log, 12, "a.mp4")
    assert len(lines) == 3 and not any("job 123" in line for line in lines)
    assert job_lines(tmp_path / "missing.log", 12) == []


def test_log_tail_reaches_back_into_the_rotated_log(tmp_path: Path) -> None:
    """After a rotation the job's first lines are in dropflow.log.1: still shown, oldest first."""
    (tmp_path / "dropflow.log.1").write_text(
        "x INFO dropflow.scheduler: job 7 (annotate) started: /in/c.mp4\n"
        "x INFO dropflow.scheduler: job 8 (annotate) started: /in/d.mp4\n"
    )
    log = tmp_path / "dropflow.log"
    log.write_text("x INFO dropflow.scheduler: job 7 (annotate) succeeded: 1 output(s)\n")
    assert [line.split(": ", 1)[1] for line in job_lines(log, 7)] == [
        "job 7 (annotate) started: /in/c.mp4",
        "job 7 (annotate) succeeded: 1 output(s)",
    ]
    assert len(job_lines(log, 7, limit=1)) == 1 and "succeeded" in job_lines(log, 7, limit=1)[0]


def test_job_row_key_follows_the_sort_terms() -> None:
    row = JobRow(1, "e", "/p", "queued", None, 0.0, "", 0, 5, 0, 0.0, 0, None, None, None, sort_value=7)
    assert row.key(1) == (1,) and row.key(2) == (7, 1)


def test_state_counts_fit_the_header_line() -> None:
    from dropflow.tui.widgets.header import state_counts

    counts = {
        "queued": 2977,
        "running": 927,
        "waiting": 1023,
        "paused": 0,
        "succeeded": 88000,
        "failed": 4971,
    }
    wide = state_counts({**counts, "cancelled": 0}, 200).plain
    assert "queued 2,977" in wide and "paused 0" in wide and "done 88,000" in wide
    narrow = state_counts({**counts, "cancelled": 0}, 78).plain
    assert len(narrow) <= 78 and "queued 3.0k" in narrow and "done 88k" in narrow
    assert "paused" not in narrow and "failed 5.0k" in narrow


def test_filter_line_editing_keys() -> None:
    from dropflow.tui.widgets.filter_line import LineEditor

    line = LineEditor("failed", selected=True)
    assert line.feed("r", "r", True) and line.text == "r", "typing replaces a pre-filled filter"
    for ch in "unning clip":
        line.feed("space" if ch == " " else ch, ch, True)
    assert line.text == "running clip"
    line.feed("ctrl+w", "\x17", False)
    assert line.text == "running "
    line.feed("backspace", "\x08", False)
    assert line.text == "running"
    assert not line.feed("down", None, False), "arrows are not for the line"
    line.feed("ctrl+u", "\x15", False)
    assert line.text == ""
    line = LineEditor("failed", selected=True)
    line.feed("backspace", "\x08", False)
    assert line.text == "", "deleting a pre-filled filter erases it"


async def test_an_edit_from_another_connection_does_not_break_a_daemon_write_mid_read(tmp_path: Path) -> None:
    """The TUI commits an edit while a task of the daemon is between a read's execute and its
    fetch on the daemon's shared connection: the daemon's next write must still go through (it
    failed with "database is locked", SQLITE_BUSY_SNAPSHOT, and the job with it)."""
    import asyncio

    async with Store.open(tmp_path / "s.db") as daemon, Store.open(tmp_path / "s.db") as tui:
        await daemon.insert_jobs([NewJob("record", "record", f"/in/{i}", f"h{i}") for i in range(3)])
        owner = owner_id()
        [job, *_] = await daemon.claim(owner, slots=1, engine_slots={}, lease_seconds=30)

        async def a_read_in_flight() -> None:
            cur = await daemon.db.execute("SELECT id FROM jobs")  # stepped to its first row
            await asyncio.sleep(0.05)  # other tasks run before the fetch, as in the daemon
            await cur.fetchall()

        reader = asyncio.create_task(a_read_in_flight())
        await asyncio.sleep(0.01)
        assert await tui.cancel(job.id) == "requested"  # the TUI's commit, meanwhile
        assert await daemon.set_progress(job.id, owner, 0.5, "half way")
        await reader
        row = await daemon.get(job.id)
        assert row is not None and row.progress == 0.5 and row.control == "cancel"


async def test_a_write_lock_held_elsewhere_during_a_daemon_read_is_waited_for(tmp_path: Path) -> None:
    """Another process holds the write lock while a task of the daemon is mid-read on the shared
    connection: SQLite refuses the daemon's BEGIN IMMEDIATE at once (waiting could deadlock, so
    busy_timeout does not apply). The write must wait its turn, not fail (it stopped the daemon)."""
    import asyncio

    async with Store.open(tmp_path / "s.db") as daemon, Store.open(tmp_path / "s.db") as other:
        await daemon.insert_jobs([NewJob("record", "record", f"/in/{i}", f"h{i}") for i in range(3)])
        owner = owner_id()
        [job, *_] = await daemon.claim(owner, slots=1, engine_slots={}, lease_seconds=30)
        locked = asyncio.Event()

        async def a_long_write_elsewhere() -> None:
            async with other.transaction() as db:
                await db.execute("UPDATE jobs SET priority = 5 WHERE id != ?", (job.id,))
                locked.set()
                await asyncio.sleep(0.3)

        async def a_read_in_flight() -> None:
            cur = await daemon.db.execute("SELECT id FROM jobs")  # stepped to its first row
            await asyncio.sleep(0.1)
            await cur.fetchall()

        writer = asyncio.create_task(a_long_write_elsewhere())
        await locked.wait()
        reader = asyncio.create_task(a_read_in_flight())
        await asyncio.sleep(0.01)
        assert await daemon.set_progress(job.id, owner, 0.5, "half way")
        await asyncio.gather(writer, reader)
        row = await daemon.get(job.id)
        assert row is not None and row.progress == 0.5
        assert [j.priority for j in await daemon.list() if j.id != job.id] == [5, 5]


async def test_a_filter_word_ignores_case_on_every_store(store_target: Path | str) -> None:
    async with Store.open(store_target) as store:
        await store.insert_jobs(
            [NewJob("dataset", "dataset", f"/in/{name}.jpg", name) for name in ("Holiday_Clip", "other")]
        )
        reader = StoreReader(store)
        for text in ("holiday_clip", "HOLIDAY", "Clip"):
            rows = await reader.window(JobQuery(parse_filter(text, ENGINES)), "start", None, 10)
            assert [r.input_path for r in rows] == ["/in/Holiday_Clip.jpg"], text

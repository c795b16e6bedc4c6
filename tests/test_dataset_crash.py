"""Exactly once under SIGKILL: a real daemon subprocess is killed mid-dataset, again and again.

Afterwards every image has exactly one record and one row, every line of every file is valid
JSON (also while the daemon was running), and no answer was paid for twice except the requests
that were in flight at a kill.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dropflow.engine.dataset.formats import check_sharegpt
from dropflow.engine.fakes import FakeOpenAI
from tests.conftest import REPO, subprocess_env

KEY = "sk-crash-test-0a1b2c3d4e5f60718293"
IMAGES = 36
CONCURRENCY = 4

CONFIG = """
paths: {{inbox: inbox, outputs: outputs, archive: archive, prompts: {prompts}, state: state}}
watch: {{settle_seconds: 0.2, rescan_seconds: 1, check_seconds: 0.05}}
scheduler:
  max_concurrency: {conc}
  engine_concurrency: {{dataset: {conc}}}
  lease_seconds: 3
  backoff_base_seconds: 0.1
  backoff_max_seconds: 0.5
  shutdown_grace_seconds: 2
  tick_seconds: 0.05
providers:
  default: openai
  openai: {{api_key: {key}, base_url: "{url}", concurrency: {conc}}}
routes:
  - name: dataset
    folder: dataset
    engine: dataset
    params: {{formats: [llamafactory, imagefolder], val_ratio: 0.2}}
"""


def image(seed: int) -> bytes:
    from PIL import Image

    im = Image.new("RGB", (32, 24), ((seed * 29) % 256, (seed * 71) % 256, (seed * 13) % 256))
    im.putpixel((seed % 32, seed % 24), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from dropflow.daemon.cli import main; sys.exit(main())",
                "--config",
                str(config),
                "daemon",
            ],
            env=subprocess_env(),
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code


def check_files(root: Path) -> int:
    """Every line of every rendered JSONL is one whole JSON document; returns the row count."""
    total = 0
    for name in (
        "train.jsonl",
        "val.jsonl",
        "imagefolder/train/metadata.jsonl",
        "imagefolder/validation/metadata.jsonl",
    ):
        path = root / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        assert not text or text.endswith("\n"), f"{name} ends mid-line"
        for line in text.splitlines():
            row = json.loads(line)
            if name.endswith("train.jsonl") or name == "val.jsonl":
                assert check_sharegpt(row) == []
                total += 1
    return total


def wait_records(root: Path, at_least: int, daemon: Daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        check_files(root)  # readers see whole files only, at any moment
        n = len(list((root / ".records").glob("*.json"))) if (root / ".records").is_dir() else 0
        if n >= at_least:
            return
        assert daemon.proc.poll() is None, "the daemon died on its own"
        assert time.monotonic() < deadline, f"only {n} records after {timeout}s"
        time.sleep(0.02)


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=10) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


def test_sigkill_mid_dataset_never_loses_or_duplicates_an_item(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "inbox" / "dataset" / "crash").mkdir(parents=True)
    with FakeOpenAI(api_key=KEY, latency=0.15) as srv:
        config = root / "config.yaml"
        config.write_text(
            CONFIG.format(prompts=REPO / "prompts", conc=CONCURRENCY, key=KEY, url=srv.base_url)
        )
        hashes = set()
        for i in range(IMAGES):
            data = image(i)
            hashes.add(hashlib.sha256(data).hexdigest())
            (root / "inbox" / "dataset" / "crash" / f"img{i:02d}.jpg").write_bytes(data)
        dataset = root / "outputs" / "dataset" / "crash"
        log = tmp_path / "daemon.log"

        kills = 0
        for target in (2, 10, 18, 27):
            d = Daemon(config, log)
            wait_records(dataset, target, d)
            time.sleep(0.05 * kills)  # land at a different point of an item's life each time
            d.kill()
            kills += 1
            check_files(dataset)

        d = Daemon(config, log)
        deadline = time.monotonic() + 60
        while True:
            rows = check_files(dataset)
            done = statuses(root / "state" / "dropflow.db").get("succeeded", 0)
            if rows == IMAGES and done == IMAGES:
                break
            assert d.proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"{rows} rows, {done} jobs done; log:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.05)
        assert d.stop() == 0
        calls = srv.count("chat")

    records = [json.loads(p.read_text()) for p in (dataset / ".records").glob("*.json")]
    assert sorted(r["hash"] for r in records) == sorted(hashes), "exactly one record per image"
    train = [json.loads(x) for x in (dataset / "train.jsonl").read_text().splitlines()]
    val = (
        [json.loads(x) for x in (dataset / "val.jsonl").read_text().splitlines()]
        if (dataset / "val.jsonl").exists()
        else []
    )
    images = [r["images"][0] for r in train + val]
    assert len(images) == len(set(images)) == IMAGES, "exactly one row per image"
    assert {Path(p).stem for p in images} == hashes
    assert all((dataset.parent / p).is_file() for p in images)
    metadata = (dataset / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()
    assert len(metadata) == len(train)
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["items"] == IMAGES and summary["failed"] == 0
    # answers already recorded or checkpointed are never asked for again; only requests in flight
    # when the daemon died may have been paid twice
    assert IMAGES <= calls <= IMAGES + kills * CONCURRENCY, calls
    assert statuses(root / "state" / "dropflow.db") == {"succeeded": IMAGES}
    with sqlite3.connect(root / "state" / "dropflow.db") as conn:
        [(reclaimed,)] = conn.execute(
            "SELECT COUNT(*) FROM events WHERE message LIKE 'reclaimed%'"
        ).fetchall()
    assert reclaimed >= kills, "every kill interrupted jobs in flight, which were taken up again"
    assert not list(dataset.rglob(".dropflow-tmp-*")), "no temp file survives a clean start"
    assert not list((root / "inbox" / "dataset" / "crash").glob("*.jpg")), "every input archived"
    assert len(list((root / "archive").rglob("*.jpg"))) == IMAGES
    assert os.path.getsize(log) > 0

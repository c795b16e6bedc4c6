"""After a run with a key set, the key appears nowhere: database, logs, outputs, error text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from dropflow.daemon.core import config as cfgmod
from dropflow.daemon.core.store import Store
from dropflow.daemon.logs import Redactor
from dropflow.engine.fakes import FakeDashScope
from dropflow.engine.fakes.server import Fault
from tests.conftest import DaemonProcess, wait_for, write_config

KEY = "sk-live-DO-NOT-LEAK-7f3a9c"


async def test_key_never_reaches_db_logs_or_outputs(tmp_path: Path) -> None:
    with FakeDashScope(api_key=KEY) as srv:
        path = write_config(tmp_path / "p")
        path.write_text(
            path.read_text().replace(
                "providers: {default: offline}",
                "providers:\n  default: dashscope\n  dashscope:\n    api_key: ${TEST_DS_KEY}\n"
                f"    base_url: {srv.base_url}\n",
            )
            + "logging: {level: DEBUG}\n"
        )
        cfg = cfgmod.load(path)  # the key is not in the environment here: the file only names it
        (cfg.paths.inbox / "record" / "dropflow.yaml").write_text("params: {ask: true}\n")
        # one request is refused: its error text must be clean too
        srv.inject(Fault.error(400, "InvalidParameter", "bad request for key " + KEY), times=1)
        for i in range(3):
            (cfg.paths.inbox / "record" / f"s{i}.txt").write_text(f"question {i}")
        with DaemonProcess(path, TEST_DS_KEY=KEY) as d:

            async def finished() -> bool:
                if not cfg.paths.database.exists():
                    return False
                async with Store.open(cfg.paths.database) as s:
                    c = Counter(j.status for j in await s.list())
                return c["succeeded"] + c["failed"] == 3

            await wait_for(finished, timeout=60)
            assert d.terminate() == 0
        assert srv.count() >= 3, "the provider was really called with the key"

    async with Store.open(cfg.paths.database) as s:
        failed = await s.list(status="failed")
    assert len(failed) == 1 and "bad request for key" in (failed[0].error_message or "")

    needle = KEY.encode()
    scanned = 0
    for root in (tmp_path / "p",):
        for f in root.rglob("*"):
            if f.is_file():
                scanned += 1
                assert needle not in f.read_bytes(), f"key leaked into {f}"
    assert scanned > 5
    log = (cfg.paths.logs / "dropflow.log").read_text()
    assert "job 1" in log or "job 2" in log  # the log really was written


def test_redactor_replaces_every_occurrence() -> None:
    r = Redactor(["sk-abcdef123456", "short"])
    assert r("a sk-abcdef123456 b sk-abcdef123456") == "a *** b ***"
    assert r("short") == "short", "values too short to be keys are not redacted (would mangle text)"
    assert r.payload({"message": "x sk-abcdef123456", "n": 1}) == {"message": "x ***", "n": 1}

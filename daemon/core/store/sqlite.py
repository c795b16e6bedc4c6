"""The job store: one SQLite database (WAL, busy_timeout), reached through aiosqlite.

The daemon is the main writer. The CLI and the TUI change jobs only through the short
`BEGIN IMMEDIATE` transactions of the request methods (`cancel`, `pause`, `retry`, ...): a job
that is not running changes state at once; a running one gets a `control` flag that its runner
picks up within a scheduler tick. So edits go in whether or not the daemon is up.

`Store` is composed of one part per concern: connection.py (opening, transactions, migrations),
jobs.py (insert, read), claims.py (claims, leases, the runner's writes), controls.py (requests
from the CLI / TUI, settings) and events.py (events, daemons). `JobStore` in
`dropflow.daemon.core.jobs` lists the methods the daemon runtime, the CLI and the TUI rely on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from dropflow.daemon.core.store.claims import ClaimsMixin
from dropflow.daemon.core.store.connection import _Connection
from dropflow.daemon.core.store.controls import ControlsMixin
from dropflow.daemon.core.store.events import EventsMixin
from dropflow.daemon.core.store.jobs import JobsMixin

if TYPE_CHECKING:
    from dropflow.daemon.core.config import Config
    from dropflow.daemon.core.jobs import JobStore

T = TypeVar("T")


# `_Connection` first: mypy wants each base's attribute to fit the same one in every later base,
# and its real `transaction` is narrower than the mixins' declaration. At run time the order
# changes nothing: the declarations exist only for the type checker, so no name is defined twice.
class Store(_Connection, JobsMixin, ClaimsMixin, ControlsMixin, EventsMixin):
    """The SQLite job store; implements `dropflow.daemon.core.jobs.JobStore`."""


def with_store(cfg: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run `fn(store)` on the config's database in a fresh event loop (for sync commands)."""

    async def go() -> T:
        async with Store.open(cfg.paths.database) as store:
            return await fn(store)

    return asyncio.run(go())


if TYPE_CHECKING:

    def _implements_job_store(store: Store) -> JobStore:
        return store  # mypy checks every method's types against the protocol here

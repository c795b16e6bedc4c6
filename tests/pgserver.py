"""A throwaway PostgreSQL server for the tests and the benches: the Debian package's binaries, a
data folder in a temporary directory, loopback TCP on a free port (and a socket in the same
directory), stopped and removed afterwards.

    python -m tests.pgserver --ensure   # install the Debian package if missing (root + apt-get)
    python -m tests.pgserver            # start one, print its URL, stop it on Enter

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (`runuser`).
Durability is off (`fsync=off` ...): the server lives as long as one test run.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL is not installed, so the PostgreSQL store tests are skipped. Install the server "
    "package: `sudo apt-get install postgresql` (Debian/Ubuntu; `make test` does it when run as "
    "root), or put a folder with initdb, pg_ctl and postgres on PATH."
)
SUPERUSER = "dropflow"
_TOOLS = ("initdb", "pg_ctl", "postgres")


def find_bin_dir() -> Path | None:
    """The folder of initdb / pg_ctl / postgres: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    candidates = []
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: _version(p), reverse=True)]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in _TOOLS):
            return folder
    return None


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def ensure_installed() -> str:
    """Install the Debian package when it is missing and this process may (root, apt-get)."""
    if find_bin_dir() is not None:
        return "PostgreSQL found"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return INSTALL_HINT
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            return f"`{' '.join(cmd)}` failed. " + INSTALL_HINT
    return "PostgreSQL installed" if find_bin_dir() is not None else INSTALL_HINT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One server; `start()` then `url(dbname)`; `stop()` removes everything it made."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="dropflow-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.started = False
        # postgres will not run as root: the server's files belong to `postgres` and it runs as that
        self.run_as: str | None = None
        if os.geteuid() == 0:
            self.run_as = "postgres"
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o755)

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def start(self) -> PgServer:
        init = self._cmd(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        self._check(subprocess.run(init, capture_output=True, text=True, check=False), "initdb")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        start = self._cmd(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )
        self._check(subprocess.run(start, capture_output=True, text=True, check=False), "pg_ctl start")
        self.started = True
        return self

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.started:
            stop = self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            subprocess.run(stop, capture_output=True, check=False)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ensure", action="store_true", help="install PostgreSQL if missing, then exit")
    args = ap.parse_args()
    if args.ensure:
        print(f"tests.pgserver: {ensure_installed()}")
        return 0  # the tests skip with the same hint: a missing server is not a failed setup
    bin_dir = find_bin_dir()
    if bin_dir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    with PgServer(bin_dir) as server:
        print(server.url())
        input("running; Enter stops it\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

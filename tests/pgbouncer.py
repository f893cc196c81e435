"""Debian's ``pgbouncer`` in front of the test database, for tests/test_pgbouncer.py.

One process on a free port of 127.0.0.1, configured in a temporary directory:
the test database under its own name in transaction mode (the mode that
breaks sessions), and under ``<name>_session`` and ``<name>_statement`` in
the other two modes, so the system check can be shown each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from django.db import connections

#: Where Debian installs it; /usr/sbin is not on every user's PATH.
CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer")


def find() -> str | None:
    for candidate in CANDIDATES:
        if found := shutil.which(candidate):
            return found
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgBouncer:
    """A pgbouncer process in front of ``server`` (a Django settings dict of the test database)."""

    def __init__(self, executable: str, server: dict[str, Any]) -> None:
        self.executable = executable
        self.server = server
        self.database = server["NAME"]
        self.port = _free_port()
        # Not under pytest's 0700 tmp: pgbouncer runs as postgres when the tests run as root.
        self.dir = Path(tempfile.mkdtemp(prefix="supaqueue-pgbouncer-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        host, port = self.server["HOST"] or "127.0.0.1", self.server["PORT"] or 5432
        target = f"host={host} port={port} dbname={self.database}"
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{self.database} = {target}\n"
            f"{self.database}_session = {target} pool_mode=session\n"
            f"{self.database}_statement = {target} pool_mode=statement\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "pool_mode = transaction\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"admin_users = {self.user}\n"
            "max_client_conn = 200\n"
            "default_pool_size = 10\n"
        )
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        self.dir.chmod(0o755)
        for path in self.dir.iterdir():
            path.chmod(0o644)
        # pgbouncer refuses to run as root: -u drops to the server's own user.
        as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
        log = open(self.dir / "pgbouncer.log", "wb")  # noqa: SIM115  closed by the child's exit
        self.proc = subprocess.Popen([self.executable, *as_user, str(ini)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return (self.dir / "pgbouncer.log").read_text(errors="replace")

    @property
    def user(self) -> str:
        return self.server["USER"] or "postgres"

    def url(self, mode: str = "transaction") -> str:
        """The test database through the pooler, in ``mode``, for the processes a test starts."""
        suffix = "" if mode == "transaction" else f"_{mode}"
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{self.database}{suffix}"

    def direct_url(self) -> str:
        """The test database without the pooler, as a LISTEN_DATABASE that bypasses it."""
        host, port = self.server["HOST"] or "127.0.0.1", self.server["PORT"] or 5432
        password = f":{self.server['PASSWORD']}" if self.server["PASSWORD"] else ""
        return f"postgres://{self.user}{password}@{host}:{port}/{self.database}"

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on pgbouncer's admin console (CLIENTS, POOLS, STATS, ...), as dicts."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, dbname="pgbouncer", user=self.user, autocommit=True
        ) as console:
            cursor = console.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def transactions(self) -> int:
        """Transactions pgbouncer has passed to the test database so far (in transaction mode)."""
        stats = [row for row in self.show("STATS") if row["database"] == self.database]
        return sum(int(row["total_xact_count"]) for row in stats)

    def client_names(self) -> set[str]:
        """The application_name of every client connected to the test database through it now."""
        return {row["application_name"] for row in self.show("CLIENTS") if row["database"] == self.database}

    @contextlib.contextmanager
    def django(self, alias: str = "default") -> Iterator[None]:
        """Django's ``alias`` connection goes through the pooler, prepared statements off, until the exit.

        The test process's ORM, enqueue calls and admin views then run as a
        project's would behind PgBouncer older than 1.21 (docs/howto/many-hosts.md).
        """
        db = connections[alias]
        saved = dict(db.settings_dict)
        db.close()
        db.settings_dict.update(
            HOST="127.0.0.1",
            PORT=self.port,
            OPTIONS={**(saved.get("OPTIONS") or {}), "prepare_threshold": None},
        )
        try:
            yield
        finally:
            db.close()
            db.settings_dict.clear()
            db.settings_dict.update(saved)

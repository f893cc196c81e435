"""Brand-new databases migrated with this project (settings.py here), for tests of migrating from nothing.

The test database cannot show a migration plan: pytest-django built it before any
test ran. These helpers create a database next to it, run ``manage.py migrate``
in a subprocess as a user would, and drop the database afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent.parent


def server_url(dbname: str) -> str:
    """A URL for ``dbname`` on the server the tests use."""
    s = settings.DATABASES["default"]
    auth = s["USER"] or "postgres"
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{dbname}"


@contextmanager
def new_database(suffix: str) -> Iterator[str]:
    """The URL of an empty database named after the test database and ``suffix``, dropped on exit."""
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_{suffix}"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server_url(name)
    finally:
        with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
            admin.execute(drop)


def migrate(url: str, *args: str) -> subprocess.CompletedProcess:
    """``manage.py migrate [args]`` of this project on the database at ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "django", "migrate", *args, "--settings=tests.shop.settings", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )

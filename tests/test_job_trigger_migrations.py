"""A job trigger installed by a user's migration, on a brand-new database migrated from nothing.

The README tells users to depend on ("supaqueue", "0001_initial"); on a fresh
database Django may then run their trigger migration before every later
supaqueue migration (tests/shop/settings.py says when), so the operation must
fit the schema of that moment and the trigger must still work on today's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from psycopg import sql

from django_supaqueue.exceptions import TriggerConfigError
from django_supaqueue.models import Queue
from django_supaqueue.operations import InstallJobTrigger

ROOT = Path(__file__).resolve().parent.parent


def server_url(dbname: str) -> str:
    """A URL for ``dbname`` on the server the tests use."""
    s = settings.DATABASES["default"]
    auth = s["USER"] or "postgres"
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{dbname}"


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """The URL of an empty database next to the test database, dropped afterwards."""
    name = f"{settings.DATABASES['default']['TEST']['NAME']}_fresh"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield server_url(name)
    with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
        admin.execute(drop)


def migrate(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--settings=tests.shop.settings", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_readme_trigger_migration_migrates_a_fresh_database_and_enqueues(fresh_database):
    migrated = migrate(fresh_database)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(fresh_database, autocommit=True) as db:
        migrations = db.execute("SELECT app || '.' || name FROM django_migrations ORDER BY id")
        applied = [row[0] for row in migrations]
        # The case this test is for: the trigger went in before supaqueue's later migrations.
        assert applied.index("shop.0002_order_status_changed") < applied.index("supaqueue.0012_serial")
        db.execute("INSERT INTO shop_order (number, status) VALUES ('A-1', 'new')")
        db.execute("UPDATE shop_order SET status = 'paid'")
        db.execute("UPDATE shop_order SET number = 'A-2'")  # status unchanged: no job
        jobs = db.execute(
            "SELECT q.name, j.task_name, j.payload, j.status, j.priority, j.max_attempts "
            "FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id ORDER BY j.id"
        ).fetchall()
    task = "tests.shop.tasks.status_changed"
    # Priority and max attempts are the queue row's: SUPAQUEUE["QUEUES"], written when it was created.
    assert jobs == [
        ("default", task, {"number": "A-1", "status": "new"}, "pending", 3, 7),
        ("default", task, {"number": "A-1", "status": "paid"}, "pending", 3, 7),
    ]


@pytest.mark.django_db
def test_a_queue_setting_the_migrations_schema_cannot_hold_yet_is_refused_with_what_to_do():
    """A trigger's queue created without its serial setting would run its jobs concurrently."""
    state = MigrationLoader(connection).project_state(("testapp", "0002_issue6_change_jobs"), at_end=True)
    assert "serial" not in {f.name for f in state.apps.get_model("supaqueue", "Queue")._meta.fields}
    operation = InstallJobTrigger(
        model_name="product", task="tests.testapp.tasks.product_added", queue="ordered"
    )
    with (
        override_settings(SUPAQUEUE={"QUEUES": {"ordered": {"serial": True}}}),
        connection.schema_editor() as editor,
        pytest.raises(TriggerConfigError, match=r"'ordered'.*serial.*depend"),
    ):
        operation.database_forwards("testapp", editor, state, state)
    assert not Queue.objects.filter(name="ordered").exists()

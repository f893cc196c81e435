"""A job trigger installed by a user's migration, on a brand-new database migrated from nothing.

docs/howto/model-changes.md tells users to depend on ("supaqueue", "0001_initial"). The trigger's
queue row is written in the columns the queue table has in that migration's
historical state, not in today's model: a later supaqueue migration that adds a
queue column may run after it on a fresh database (tests/shop/settings.py says
when), so the operation must fit the schema of that moment.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings

from django_supaqueue.exceptions import TriggerConfigError
from django_supaqueue.models import Queue
from django_supaqueue.operations import InstallJobTrigger
from tests.shop.project import migrate, new_database


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with new_database("fresh") as url:
        yield url


def test_the_readme_trigger_migration_migrates_a_fresh_database_and_enqueues(fresh_database):
    migrated = migrate(fresh_database)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(fresh_database, autocommit=True) as db:
        migrations = db.execute("SELECT app || '.' || name FROM django_migrations ORDER BY id")
        applied = [row[0] for row in migrations]
        assert applied.index("supaqueue.0001_initial") < applied.index("shop.0002_order_status_changed")
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


def state_before_queue_column(column: str):
    """The state a trigger migration sees when it runs before a supaqueue migration that adds ``column``.

    supaqueue's one migration creates every queue column there is today; this
    stands in for the next one that adds a column.
    """
    state = MigrationLoader(connection).project_state(("testapp", "0002_issue6_change_jobs"), at_end=True)
    migrations.RemoveField(model_name="queue", name=column).state_forwards("supaqueue", state)
    return state


def install_product_trigger(state, queue: str) -> None:
    operation = InstallJobTrigger(model_name="product", task="tests.testapp.tasks.product_added", queue=queue)
    with connection.schema_editor() as editor:
        operation.database_forwards("testapp", editor, state, state)


@pytest.mark.django_db
def test_a_queue_setting_the_migrations_schema_cannot_hold_yet_is_refused_with_what_to_do():
    """A trigger's queue created without its serial setting would run its jobs concurrently."""
    state = state_before_queue_column("serial")
    with (
        override_settings(SUPAQUEUE={"QUEUES": {"ordered": {"serial": True}}}),
        pytest.raises(TriggerConfigError, match=r"'ordered'.*serial.*depend"),
    ):
        install_product_trigger(state, "ordered")
    assert not Queue.objects.filter(name="ordered").exists()


@pytest.mark.django_db
def test_a_queue_setting_the_migrations_schema_holds_is_written_into_the_new_queue():
    state = MigrationLoader(connection).project_state(("testapp", "0002_issue6_change_jobs"), at_end=True)
    with override_settings(SUPAQUEUE={"QUEUES": {"ordered": {"serial": True}}}):
        install_product_trigger(state, "ordered")
    assert Queue.objects.get(name="ordered").serial

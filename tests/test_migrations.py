"""supaqueue's one migration builds the whole schema: the models' tables and, from sql/, what they cannot say.

The test database is migrated from nothing when the session starts; most tests
here read its catalogue. A SQL file the migration stops running, or a name
changed on one side only, fails here instead of in a worker.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection

from django_supaqueue import queue as q
from django_supaqueue.constants import CHANNEL
from tests.shop.project import migrate, new_database

#: The functions the migration creates, by signature.
FUNCTIONS = [
    "supaqueue_job_is_valid(text, integer, integer, integer, integer)",
    "supaqueue_notify_jobs()",
    "supaqueue_settle_dependents(bigint[], text[])",
    "supaqueue_protect_queue()",
    "supaqueue_protect_worker()",
    "supaqueue_job_deleted()",
    "supaqueue_job_truncated()",
]


def rows(statement: str, params: tuple = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


@pytest.mark.django_db
@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_queues_functions_exist(function):
    assert rows("SELECT to_regprocedure(%s) IS NOT NULL", (function,)) == [(True,)]


@pytest.mark.django_db
def test_the_queue_tables_have_exactly_the_queues_triggers():
    triggers = rows(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relname LIKE 'supaqueue%%'"
    )
    assert set(triggers) == {
        ("supaqueue_job", "supaqueue_job_notify"),
        ("supaqueue_job", "supaqueue_job_deleted"),
        ("supaqueue_job", "supaqueue_job_truncated"),
        ("supaqueue_queue", "supaqueue_queue_protect"),
        ("supaqueue_worker", "supaqueue_worker_protect"),
    }


@pytest.mark.django_db
def test_the_job_row_has_one_check_and_it_calls_the_function():
    checks = rows(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'supaqueue_job'::regclass AND contype = 'c'"
    )
    assert [name for name, _ in checks] == ["supaqueue_job_valid"]
    assert "supaqueue_job_is_valid(" in checks[0][1]


@pytest.mark.django_db
def test_the_hot_tables_carry_no_foreign_keys_but_the_jobs_owner():
    """Triggers do what the keys to jobs, queues and workers would; the keys would cost every insert."""
    keys = rows(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid IN "
        "('supaqueue_job'::regclass, 'supaqueue_currentjob'::regclass, 'supaqueue_jobevent'::regclass)"
    )
    assert keys == [("supaqueue_job", "auth_user")]


@pytest.mark.django_db
def test_the_job_table_has_the_claim_indexes_and_no_others():
    indexes = dict(rows("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'supaqueue_job'"))
    assert set(indexes) == {
        "supaqueue_job_pkey",
        "supaqueue_job_pending_key",
        "supaqueue_job_claim",
        "supaqueue_job_retrying",
        "supaqueue_job_group",
        "supaqueue_job_running",
        "supaqueue_job_queue_status",
        "supaqueue_job_held",
        "supaqueue_job_finished",
        "supaqueue_job_owner",
        "supaqueue_job_tenant",
        "supaqueue_job_tenant_claim",
    }
    assert "(queue_id, priority DESC, run_at, id) WHERE (enabled AND" in indexes["supaqueue_job_claim"]
    # Only jobs with a tenant: the index costs nothing to enqueues without one.
    assert "(tenant_id IS NOT NULL)" in indexes["supaqueue_job_tenant_claim"]
    assert indexes["supaqueue_job_pending_key"].startswith("CREATE UNIQUE INDEX")
    assert "WHERE ((key IS NOT NULL)" in indexes["supaqueue_job_pending_key"]
    # Writing and claiming a job leave the (queue, status) index alone (see stats._COUNTED).
    assert (
        "NOT" in indexes["supaqueue_job_queue_status"]
        and "in_progress" in indexes["supaqueue_job_queue_status"]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "options"),
    [
        (
            "supaqueue_job",
            [
                "autovacuum_vacuum_scale_factor=0.02",
                "autovacuum_analyze_scale_factor=0.02",
                "autovacuum_vacuum_insert_scale_factor=0.05",
            ],
        ),
        ("supaqueue_currentjob", ["autovacuum_vacuum_scale_factor=0.0", "autovacuum_vacuum_threshold=1000"]),
        (
            "supaqueue_jobevent",
            ["autovacuum_vacuum_scale_factor=0.05", "autovacuum_vacuum_insert_scale_factor=0.1"],
        ),
    ],
)
def test_the_churning_tables_are_vacuumed_early(table, options):
    assert rows("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)) == [(options,)]


@pytest.mark.django_db
def test_the_dashboard_reads_events_by_time_through_a_brin_index_and_jobs_through_statistics():
    [(brin,)] = rows("SELECT indexdef FROM pg_indexes WHERE indexname = 'supaqueue_event_at_brin'")
    assert "ON public.supaqueue_jobevent USING brin (at) WITH (autosummarize='on')" in brin
    statistics = "SELECT stxkind FROM pg_statistic_ext WHERE stxname = 'supaqueue_job_queue_status_stats'"
    assert rows(statistics) == [(["d", "m"],)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "function", ["supaqueue_notify_jobs()", "supaqueue_settle_dependents(bigint[], text[])"]
)
def test_the_functions_notify_on_the_channel_the_workers_listen_on(function):
    [(source,)] = rows("SELECT pg_get_functiondef(to_regprocedure(%s))", (function,))
    assert f"pg_notify('{CHANNEL}'," in source
    assert ":'channel'" not in source


@pytest.fixture
def fresh_database() -> Iterator[str]:
    with new_database("round_trip") as url:
        yield url


def test_migrating_back_to_zero_leaves_nothing_of_the_queue_and_forwards_builds_it_again(fresh_database):
    leftovers = (
        "SELECT relname FROM pg_class WHERE relname LIKE 'supaqueue%%' "
        "UNION ALL SELECT proname || '()' FROM pg_proc WHERE proname LIKE 'supaqueue%%' "
        "UNION ALL SELECT stxname FROM pg_statistic_ext WHERE stxname LIKE 'supaqueue%%'"
    )
    for args in [(), ("supaqueue", "zero")]:
        migrated = migrate(fresh_database, *args)
        assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(fresh_database, autocommit=True) as db:
        # The shop's job trigger is gone too; the job triggers' shared function stays by design.
        assert [row[0] for row in db.execute(leftovers)] == [f"{q.ROW_TRIGGER_FUNCTION}()"]
    migrated = migrate(fresh_database)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(fresh_database, autocommit=True) as db:
        found = db.execute(
            "SELECT count(*) FROM unnest(%s::text[]) f WHERE to_regprocedure(f) IS NOT NULL", [FUNCTIONS]
        )
        assert found.fetchone() == (len(FUNCTIONS),)

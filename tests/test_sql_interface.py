"""The SQL interface for callers that are not Django: supaqueue_add_job and supaqueue_reschedule_jobs.

Every call goes through a plain psycopg connection (autocommit), as a service in
another language would make it; what it wrote is read back through the ORM. The
function copies statements of the Python enqueue: its jobs are held to the
Python enqueue's here, its text in test_sql_copies.py. The SQL worker's
functions are tested in test_sql_worker.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from django_supaqueue import conf, enqueue
from django_supaqueue import queue as q
from django_supaqueue.models import Job, Queue
from tests.factories import JobFactory, QueueFactory
from tests.helpers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sql() -> Iterator[psycopg.Connection]:
    """A connection as a caller outside Django has one: plain psycopg, autocommit."""
    with psycopg.connect(database_url(), autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def listener() -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(f"LISTEN {q.CHANNEL}")
        yield conn


def add_job(sql: psycopg.Connection, arguments: str, params: dict | None = None) -> dict:
    """``SELECT * FROM supaqueue_add_job(<arguments>)``: the job written (or met), as a dict."""
    return sql.execute(f"SELECT * FROM supaqueue_add_job({arguments})", params or {}).fetchone()


def heard(listener: psycopg.Connection, timeout: float = 1.0) -> set[str]:
    return {n.payload for n in listener.notifies(timeout=timeout)}


# ---------------------------------------------------------------------------------------- add_job


def test_add_job_in_named_notation_writes_a_pending_job(sql):
    row = sql.execute(
        """SELECT (supaqueue_add_job('app.tasks.send', '{"to": 1}', queue_name => 'emails')).id"""
    ).fetchone()
    job = Job.objects.get(pk=row["id"])
    assert (job.task_name, job.payload, job.args) == ("app.tasks.send", {"to": 1}, [])
    assert job.queue.name == "emails"
    assert (job.status, job.attempts, job.enabled, job.key) == ("pending", 0, True, None)
    assert job.run_at <= timezone.now()


def test_add_job_returns_the_whole_job_row(sql):
    job = add_job(sql, "'app.tasks.send', tenant_id => 'acme', max_attempts => 3")
    assert job["task_name"] == "app.tasks.send" and job["tenant_id"] == "acme" and job["max_attempts"] == 3
    assert set(job) == {field.column for field in Job._meta.concrete_fields}


def test_a_queue_name_of_null_means_the_default_queue(sql):
    job = add_job(sql, "'app.tasks.send', queue_name => NULL")
    assert Job.objects.get(pk=job["id"]).queue.name == conf.get("DEFAULT_QUEUE") == "default"


def test_the_queue_is_created_on_demand_with_the_models_defaults(sql):
    add_job(sql, "'app.tasks.send', queue_name => 'made-by-sql'")
    made = Queue.objects.get(name="made-by-sql")
    assert (made.max_attempts, made.priority, made.paused, made.serial, made.head_of_line) == (
        None,
        None,
        False,
        False,
        True,
    )
    assert made.concurrency_limit is None and made.http_url == ""


def test_the_queues_defaults_apply_and_the_call_wins_over_them(sql):
    QueueFactory(name="tuned", priority=7, max_attempts=9)
    tuned = add_job(sql, "'t', queue_name => 'tuned'")
    assert (tuned["priority"], tuned["max_attempts"]) == (7, 9)
    called = add_job(sql, "'t', queue_name => 'tuned', priority => -3, max_attempts => 2")
    assert (called["priority"], called["max_attempts"]) == (-3, 2)


def test_without_settings_the_defaults_are_the_packages(sql):
    job = add_job(sql, "'t'")
    assert job["priority"] == conf.DEFAULTS["PRIORITY"]
    assert job["max_attempts"] == conf.DEFAULTS["MAX_ATTEMPTS"]
    assert Job.objects.get(pk=job["id"]).queue.name == conf.DEFAULTS["DEFAULT_QUEUE"]


def test_custom_settings_stand_in_for_supaqueues_defaults(sql):
    sql.execute("SET supaqueue.max_attempts = '8'")
    sql.execute("SET supaqueue.priority = '4'")
    sql.execute("SET supaqueue.default_queue = 'elsewhere'")
    job = add_job(sql, "'t'")
    assert (job["max_attempts"], job["priority"]) == (8, 4)
    assert Job.objects.get(pk=job["id"]).queue.name == "elsewhere"


def test_a_job_in_the_future_keeps_its_run_at(sql):
    when = timezone.now() + timedelta(hours=2)
    assert add_job(sql, "'t', run_at => %(when)s", {"when": when})["run_at"] == when


def test_add_job_writes_the_job_pythons_enqueue_writes(sql):
    QueueFactory(name="same", priority=4, max_attempts=9)
    when = timezone.now() + timedelta(minutes=5)
    spec = q.JobSpec(
        task_name="tests.testapp.tasks.add",
        payload={"a": 1, "b": 2},
        queue="same",
        run_at=when,
        priority=-2,
        key="from-python",
        tenant_id="acme",
    )
    from_python = q.enqueue_job(spec)
    from_sql = add_job(
        sql,
        "'tests.testapp.tasks.add', %(payload)s, 'same', %(when)s, -2, job_key => 'from-sql', "
        "tenant_id => 'acme'",
        {"payload": Jsonb({"a": 1, "b": 2}), "when": when},
    )
    different = {"id", "key", "created_at"}
    python_row = Job.objects.filter(pk=from_python.pk).values().get()
    sql_row = Job.objects.filter(pk=from_sql["id"]).values().get()
    assert {k: v for k, v in python_row.items() if k not in different} == {
        k: v for k, v in sql_row.items() if k not in different
    }


@pytest.mark.parametrize(
    "arguments, argument",
    [
        ("''", "task_name"),
        ("NULL", "task_name"),
        ("repeat('t', 256)", "task_name"),
        ("'t', '[1, 2]'", "payload"),
        ("'t', '\"text\"'", "payload"),
        ("'t', NULL", "payload"),
        ("'t', queue_name => 'two words'", "queue_name"),
        ("'t', queue_name => '-dash-first'", "queue_name"),
        ("'t', queue_name => ''", "queue_name"),
        ("'t', queue_name => repeat('q', 101)", "queue_name"),
        ("'t', run_at => 'infinity'", "run_at"),
        ("'t', run_at => '10000-01-01 00:00+00'", "run_at"),
        ("'t', priority => 101", "priority"),
        ("'t', priority => -101", "priority"),
        ("'t', max_attempts => 0", "max_attempts"),
        ("'t', job_key => ''", "job_key"),
        ("'t', job_key => repeat('k', 256)", "job_key"),
        ("'t', job_key => 'k', key_mode => 'upsert'", "key_mode"),
        ("'t', job_key => 'k', key_mode => NULL", "key_mode"),
        ("'t', key_mode => 'replace'", "key_mode"),
        ("'t', tenant_id => ''", "tenant_id"),
    ],
)
def test_a_refused_argument_raises_an_error_naming_it_and_writes_nothing(sql, arguments, argument):
    fresh = "" if "queue_name" in arguments else ", queue_name => 'fresh'"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=rf"^{argument}\b"):
        add_job(sql, arguments + fresh)
    assert not Job.objects.exists()
    assert not Queue.objects.filter(name__in=["fresh", "two words", "-dash-first"]).exists()


def test_a_payload_over_the_size_limit_is_refused(sql):
    sql.execute("SET supaqueue.max_payload_bytes = '20'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"^payload is 28 bytes of JSON"):
        add_job(sql, "'t', %(payload)s", {"payload": Jsonb({"text": "x" * 16})})
    assert add_job(sql, "'t', %(payload)s", {"payload": Jsonb({"text": "x"})})["payload"] == {"text": "x"}


def test_an_error_inside_the_callers_transaction_rolls_back_what_it_wrote_before(sql):
    with pytest.raises(psycopg.errors.InvalidParameterValue), sql.transaction():
        add_job(sql, "'t'")
        add_job(sql, "'t', priority => 500")
    assert not Job.objects.exists()


# ------------------------------------------------------------------------------------ key modes


def test_dedupe_returns_the_job_not_started_that_holds_the_key(sql):
    first = add_job(sql, """'t', '{"v": 1}', job_key => 'k'""")
    again = add_job(sql, """'t', '{"v": 2}', job_key => 'k', priority => 9""")
    assert again["id"] == first["id"] and again["payload"] == {"v": 1} and again["priority"] == 0
    assert Job.objects.count() == 1


def test_replace_gives_the_waiting_job_the_new_values(sql):
    later = timezone.now() + timedelta(hours=1)
    first = add_job(sql, """'t', '{"v": 1}', job_key => 'k'""")
    replaced = add_job(
        sql,
        """'t2', '{"v": 2}', run_at => %(later)s, priority => 9, max_attempts => 2, job_key => 'k',
           key_mode => 'replace'""",
        {"later": later},
    )
    assert replaced["id"] == first["id"]
    job = Job.objects.get(pk=first["id"])
    assert (job.task_name, job.payload, job.run_at) == ("t2", {"v": 2}, later)
    assert (job.priority, job.max_attempts) == (9, 2)


def test_preserve_run_at_gives_it_the_new_values_but_its_run_at(sql):
    soon = timezone.now() + timedelta(minutes=1)
    first = add_job(sql, """'t', '{"v": 1}', run_at => %(soon)s, job_key => 'k'""", {"soon": soon})
    kept = add_job(
        sql,
        """'t', '{"v": 2}', run_at => %(later)s, job_key => 'k', key_mode => 'preserve_run_at'""",
        {"later": soon + timedelta(hours=1)},
    )
    assert kept["id"] == first["id"] and kept["payload"] == {"v": 2} and kept["run_at"] == soon


@pytest.mark.parametrize("key_mode", ["dedupe", "replace", "preserve_run_at"])
def test_a_key_held_by_a_running_job_gets_a_new_pending_job(sql, key_mode):
    running = JobFactory(key="k", status="in_progress", attempts=1)
    job = add_job(sql, "'t', job_key => 'k', key_mode => %(mode)s", {"mode": key_mode})
    assert job["id"] != running.pk and job["status"] == "pending" and job["key"] == "k"


def test_python_and_sql_meet_on_the_same_key(sql):
    job = enqueue("tests.testapp.tasks.noop", key="shared")
    assert add_job(sql, "'tests.testapp.tasks.noop', job_key => 'shared'")["id"] == job.pk


def test_a_new_job_wakes_its_queues_workers(sql, listener):
    add_job(sql, "'t', queue_name => 'woken'")
    assert heard(listener) == {"woken 0"}
    later = timezone.now() + timedelta(hours=1)
    add_job(sql, "'t', queue_name => 'woken', run_at => %(later)s", {"later": later})
    [(name, epoch)] = [payload.split() for payload in heard(listener)]
    assert name == "woken" and float(epoch) == pytest.approx(later.timestamp())


def test_a_job_that_met_its_key_wakes_nobody(sql, listener):
    add_job(sql, "'t', job_key => 'k'")
    heard(listener)
    add_job(sql, "'t', job_key => 'k'")
    assert heard(listener, timeout=0.3) == set()


# ------------------------------------------------------------------------------------ reschedule


def reschedule(sql: psycopg.Connection, arguments: str, params: dict | None = None) -> int:
    return sql.execute(f"SELECT supaqueue_reschedule_jobs({arguments}) AS n", params or {}).fetchone()["n"]


def test_reschedule_changes_the_jobs_not_started_and_leaves_the_others(sql):
    pending = JobFactory(priority=1)
    waiting = JobFactory(status="waiting", waiting_for=1)
    held_retry = JobFactory(enabled=False, attempts=1, run_at=timezone.now() + timedelta(hours=1))
    running = JobFactory(status="in_progress", attempts=1)
    done = JobFactory(status="successful", attempts=1)
    when = timezone.now() + timedelta(days=1)
    ids = [pending.pk, waiting.pk, held_retry.pk, running.pk, done.pk]
    assert reschedule(sql, "%(ids)s, %(when)s, 50, 7", {"ids": ids, "when": when}) == 3
    for job in (pending, waiting, held_retry):
        job.refresh_from_db()
        assert (job.run_at, job.priority, job.max_attempts) == (when, 50, 7)
    for job in (running, done):
        before = (job.run_at, job.priority, job.max_attempts)
        job.refresh_from_db()
        assert (job.run_at, job.priority, job.max_attempts) == before


def test_reschedule_leaves_what_it_is_given_as_null(sql):
    job = JobFactory(priority=3, max_attempts=4)
    run_at = job.run_at
    assert reschedule(sql, "ARRAY[%(id)s]::bigint[], priority => -5", {"id": job.pk}) == 1
    job.refresh_from_db()
    assert (job.run_at, job.priority, job.max_attempts) == (run_at, -5, 4)
    assert reschedule(sql, "ARRAY[%(id)s]::bigint[]", {"id": job.pk}) == 0


@pytest.mark.parametrize(
    "arguments, argument",
    [
        ("priority => 101", "priority"),
        ("max_attempts => 0", "max_attempts"),
        ("run_at => '-infinity'", "run_at"),
    ],
)
def test_reschedule_refuses_a_bad_argument_by_name_and_changes_nothing(sql, arguments, argument):
    job = JobFactory(priority=3)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=rf"^{argument}\b"):
        reschedule(sql, f"ARRAY[%(id)s]::bigint[], {arguments}", {"id": job.pk})
    job.refresh_from_db()
    assert job.priority == 3 and job.max_attempts == 5


def test_a_job_rescheduled_to_now_wakes_its_queues_workers(sql, listener):
    job = JobFactory(queue=QueueFactory(name="later"), run_at=timezone.now() + timedelta(hours=1))
    heard(listener, timeout=0.2)
    assert reschedule(sql, "ARRAY[%(id)s]::bigint[], now()", {"id": job.pk}) == 1
    assert heard(listener) == {"later 0"}


def test_the_migration_installs_the_functions_with_the_documented_signatures(sql):
    add_job_signature = (
        "supaqueue_add_job(text, jsonb, text, timestamptz, integer, integer, text, text, text)"
    )
    signatures = {
        add_job_signature: "supaqueue_job",
        "supaqueue_reschedule_jobs(bigint[], timestamptz, integer, integer)": "integer",
        "supaqueue_get_job(text, text[], text[])": "supaqueue_job",
        "supaqueue_complete_job(bigint, text, jsonb)": "boolean",
        "supaqueue_fail_job(bigint, text, text)": "boolean",
        "supaqueue_heartbeat(text)": "integer",
    }
    for signature, returns in signatures.items():
        row = sql.execute(
            "SELECT pg_get_function_arguments(p.oid) AS arguments, p.prorettype::regtype::text AS returns "
            "FROM pg_proc p WHERE p.oid = to_regprocedure(%s)",
            [signature],
        ).fetchone()
        assert row is not None, signature
        assert row["returns"] == returns
    add_job_arguments = sql.execute(
        "SELECT pg_get_function_arguments('supaqueue_add_job'::regproc) AS a"
    ).fetchone()["a"]
    assert add_job_arguments == (
        "task_name text, payload jsonb DEFAULT '{}'::jsonb, queue_name text DEFAULT NULL::text, "
        "run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, "
        "priority integer DEFAULT NULL::integer, "
        "max_attempts integer DEFAULT NULL::integer, job_key text DEFAULT NULL::text, "
        "key_mode text DEFAULT 'dedupe'::text, tenant_id text DEFAULT NULL::text"
    )


def test_the_functions_notify_on_the_channel_the_workers_listen_on(sql):
    for function in ("supaqueue_reschedule_jobs", "supaqueue_complete_job", "supaqueue_fail_job"):
        source = sql.execute("SELECT pg_get_functiondef(%s::regproc) AS s", [function]).fetchone()["s"]
        assert f"pg_notify('{q.CHANNEL}'," in source and ":'channel'" not in source

"""The SQL interface's functions copy statements of the Python queue: the copies agree with the originals.

The functions (django_supaqueue/sql/add_job.sql, sql_worker.sql) repeat the
statements of queue/enqueue.sql, claims.sql and outcomes.sql rather than call
them: the Python paths run in batches and must not pay for a PL/pgSQL call.
These tests hold each copied part to its original, with the Python parameters
spelt as the functions' variables; what the functions do is tested in
test_sql_interface.py and test_sql_worker.py, and there against the Python
paths' results too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import django_supaqueue
from django_supaqueue.queue import claims, enqueue, outcomes

SQL_DIR = Path(django_supaqueue.__file__).parent / "sql"
SQL_WORKER = (SQL_DIR / "sql_worker.sql").read_text()
ADD_JOB = (SQL_DIR / "add_job.sql").read_text()


def functions(text: str) -> dict[str, str]:
    """The bodies of the file's functions, by name, whitespace made single spaces."""
    parts = re.split(r"CREATE OR REPLACE FUNCTION (\w+)\(", text)
    return {name: flat(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def segment(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin) + len(end)]


#: The Python claim's parameters, as the SQL worker's copies spell them.
CLAIM_PARAMETERS = {
    "(%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))": (
        "(tasks IS NULL OR j.task_name = ANY(tasks))"
    ),
    "%(queues)s::text[]": "served",
    "%(limit)s::int": "claim_limit",
    "%(free)s::int": "free_slots",
    "%(locked)s::bool": "queues_locked",
    "%(on_loop)s::bool": "loop_only",
    "%(rate_margin)s": "rate_margin",
    "%(worker_id)s": "me",
    "%(worker_name)s": "me_name",
    "%(lease)s": "lease_seconds",
    "%(default_backoff_max)s": "default_backoff_max",
    "%(default_backoff)s": "default_backoff",
}


def as_copied(statement: str) -> str:
    text = flat(statement)
    for parameter, variable in CLAIM_PARAMETERS.items():
        text = text.replace(parameter, variable)
    return text


@pytest.mark.parametrize(
    "function, part, statement, start, end",
    [
        (
            "supaqueue_get_job",
            0,
            claims.SQL["lock_capped_queues"],
            "WHERE (concurrency_limit",
            "FOR NO KEY UPDATE",
        ),
        ("supaqueue_get_job", 0, claims.SQL["claim_serial"], "WHERE NOT paused", "), claimed AS ("),
        (
            "supaqueue_get_job",
            0,
            claims.SQL["claim_serial"],
            "claimed AS ( UPDATE",
            "WHERE j.id = lease.job_id",
        ),
        ("supaqueue_get_job", 0, claims.SQL["claim_serial"], "calls AS (", "'', '', '' FROM claimed )"),
        ("supaqueue_get_job", 1, claims.SQL["claim_tenants"], "WHERE NOT paused", "), claimed AS ("),
        ("supaqueue_get_job", 1, claims.SQL["claim_tenants"], "claimed AS ( UPDATE", "WHERE j.id = p.id"),
        ("supaqueue_get_job", 1, claims.SQL["claim_tenants"], "lease AS (", "'', '', '' FROM claimed )"),
        (
            "supaqueue_get_job",
            2,
            claims.SQL["claim"],
            "WHERE NOT paused",
            "LIMIT claim_limit ), claimed AS (",
        ),
        (
            "supaqueue_get_job",
            2,
            claims.SQL["claim"],
            "claimed AS ( UPDATE",
            "started_at = statement_timestamp()",
        ),
        ("supaqueue_get_job", 2, claims.SQL["claim"], "pruned AS (", "'', '', '' FROM claimed )"),
        # The batch reads each job's values by its place in the arrays; one job needs no arrays.
        ("supaqueue_complete_job", 0, outcomes.SQL["complete"], "settled AS (", "HAVING count(*) > 0 )"),
        (
            "supaqueue_complete_job",
            0,
            outcomes.SQL["complete"],
            "event AS (",
            "http_status) SELECT lease.job_id,",
        ),
        ("supaqueue_fail_job", 0, outcomes.SQL["fail"], "upd AS (", "FROM upd )"),
    ],
)
def test_the_sql_workers_statements_are_the_python_workers(function, part, statement, start, end):
    body = functions(SQL_WORKER)[function].split("IF taken IS NULL THEN")[part]
    original = as_copied(statement)
    if "WHERE NOT paused" in start and "want AS (" in original and "before AS (" not in original:
        # the claim, after claim_serial and claim_tenants took nothing: one job
        original = re.sub(r"want AS \(.*?\) AS n \), ", "", original)
    assert segment(body, start, end) == segment(original, start, end)


def test_add_job_meets_keys_and_updates_in_its_key_modes_as_the_python_enqueue_does():
    text = flat(ADD_JOB)
    upsert = flat(enqueue.SQL["upsert"])
    target = "ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL"
    assert text.count(target) == 2 and target in flat(enqueue.SQL["insert_one"])
    update = upsert[upsert.index("DO UPDATE SET") : upsert.index(" RETURNING")]
    assert update.replace("%(key_mode)s", "new_key_mode") in text


def test_add_job_fills_in_the_defaults_as_the_single_enqueue_does():
    insert_one = flat(enqueue.SQL["insert_one"])
    for python, copied in [
        (
            "COALESCE(%(priority)s::int, q.priority, %(default_priority)s::int)",
            "COALESCE(new_priority, q.priority, default_priority)",
        ),
        ("COALESCE(%(run_at)s::timestamptz, now())", "COALESCE(new_run_at, now())"),
        (
            "COALESCE(%(max_attempts)s::int, q.max_attempts, %(default_max_attempts)s::int)",
            "COALESCE(new_max_attempts, q.max_attempts, default_max_attempts)",
        ),
    ]:
        assert python in insert_one and flat(ADD_JOB).count(copied) == 2

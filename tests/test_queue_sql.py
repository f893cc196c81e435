"""The queue's statements as text: named, described, whole, and in the models' vocabulary.

The .sql files of django_supaqueue/queue/ spell table names, statuses and event
kinds literally, and repeat what two statements share rather than gluing
fragments: these tests hold the literals to the models and the copies to each
other. What the statements do is tested against the database elsewhere.
"""

import re
from pathlib import Path

import psycopg
import pytest
from django.apps import apps

from django_supaqueue.models import Job, JobEvent, Queue
from django_supaqueue.queue import (
    KEY_MODES,
    actions,
    claims,
    enqueue,
    graph,
    leases,
    outcomes,
    queries,
    rows,
    tables,
    triggers,
)

MODULES = (actions, claims, enqueue, graph, leases, outcomes, rows, triggers)
STATEMENTS = {
    f"{m.__name__.rpartition('.')[2]}.{name}": text for m in MODULES for name, text in m.SQL.items()
}
# Names in the statements that are not tables: the database functions, the trigger's transition tables.
NOT_TABLES = {
    "supaqueue_settle_dependents",
    "supaqueue_reschedule_jobs",
    "supaqueue_enqueue_changed_rows",
    "supaqueue_new_rows",
    "supaqueue_old_rows",
}
# The keys of an HTTP queue's call, as the claim builds it for ClaimedJob.http.
HTTP_CALL_KEYS = {
    "url",
    "method",
    "headers",
    "secret",
    "secret_header",
    "retry_client_errors",
    "timeout",
    "rate_limited",
    "path",
}


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def between(text: str, start: str, end: str) -> str:
    """The part of ``text`` from ``start`` up to ``end``, whitespace made single spaces."""
    text = flat(text)
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start)) + len(end)]


def our_tables() -> set[str]:
    return {model._meta.db_table for model in apps.get_app_config("supaqueue").get_models()}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_a_module_runs_every_statement_of_its_file_and_only_those(module):
    source = Path(module.__file__).read_text()
    used = set(re.findall(r"""\bSQL\[["'](\w+)["']\]""", source))
    assert used == set(module.SQL)


def test_every_sql_file_is_read_by_its_module():
    files = {path.name for path in Path(queries.__file__).parent.glob("*.sql")}
    assert files == {f"{m.__name__.rpartition('.')[2]}.sql" for m in MODULES}


def test_a_statement_needs_a_description_a_text_and_a_name_of_its_own():
    parsed = queries.parse("-- name: one\n-- Says what it does.\nSELECT 1\n", "x.sql")
    assert dict(parsed) == {"one": "SELECT 1"}
    for text in (
        "-- name: one\nSELECT 1\n",
        "-- name: one\n-- Says what it does.\n",
        "-- name: one\n-- One.\nSELECT 1\n-- name: one\n-- Again.\nSELECT 2\n",
    ):
        with pytest.raises(ValueError, match="needs a name of its own"):
            queries.parse(text, "x.sql")


def test_statements_are_sent_without_indentation_and_functions_keep_their_layout():
    text = (
        "-- name: one\n-- A query.\nSELECT a,\n       b\n  FROM t\n"
        "-- name: two\n-- A function.\nCREATE FUNCTION f() RETURNS int AS $f$\nBEGIN\n  RETURN 1;\nEND $f$\n"
    )
    parsed = queries.parse(text, "x.sql")
    assert parsed["one"] == "SELECT a,\nb\nFROM t"
    assert "\n  RETURN 1;" in parsed["two"]


def test_a_variant_leaves_out_a_clause_its_statement_holds():
    assert enqueue.KEY_HELD not in enqueue._UNKEYED["insert_batch"]
    assert queries.without("SELECT 1 FOR UPDATE", " FOR UPDATE") == "SELECT 1"
    with pytest.raises(ValueError, match="no ' SKIP LOCKED' to leave out"):
        queries.without("SELECT 1", " SKIP LOCKED")


def test_what_a_claim_loop_sends_every_round_trip_fits_psycopgs_cache_of_converted_statements():
    """Past the cache's size psycopg splits a statement's text again on each execution."""
    limit = psycopg._queries.MAX_CACHED_STATEMENT_LENGTH
    wake = claims.rate_wake_statement(("emails", "reports"), 0.5, False)
    hot = [claims.SQL["claim"], claims.SQL["lock_capped_queues"], wake, *outcomes.SQL.values()]
    assert max(len(text.encode()) for text in hot) <= limit


def test_the_tables_the_statements_name_are_the_models_tables():
    texts = [*STATEMENTS.values(), triggers._CREATE_QUEUE.as_string(None)]
    named = {name for text in texts for name in re.findall(r"\bsupaqueue_\w+", text)} - NOT_TABLES
    constants = {tables.QUEUE, tables.JOB, tables.CURRENT, tables.EVENT, tables.DEPENDENCY, tables.WORKER}
    assert named == constants | {tables.CALL}
    assert named <= our_tables()
    assert tables.JOB == "supaqueue_job" and tables.QUEUE == "supaqueue_queue"
    assert tables.CURRENT == "supaqueue_currentjob" and tables.EVENT == "supaqueue_jobevent"
    assert tables.DEPENDENCY == "supaqueue_jobdependency" and tables.WORKER == "supaqueue_worker"
    assert tables.CALL == "supaqueue_queuecall"


def test_every_word_quoted_in_the_statements_is_a_status_an_event_kind_or_a_known_key():
    vocabulary = (
        set(Job.Status.values)
        | set(JobEvent.Kind.values)
        | set(KEY_MODES)
        | set(Queue.LimitScope.values)
        | set(Queue.ExecutionMode.values)
        | HTTP_CALL_KEYS
        | our_tables()
        | {"row", "null"}  # the trigger's payload kind, and JSON's null
    )
    quoted = {word for text in STATEMENTS.values() for word in re.findall(r"'([a-z_]+)'", text)}
    assert quoted - vocabulary == set()


def test_the_statuses_the_statements_compare_and_set_are_the_models():
    found = set()
    for text in STATEMENTS.values():
        found.update(re.findall(r"\bstatus\s*(?:=|<>)\s*'(\w+)'", text))
        for listed in re.findall(r"\bstatus\s+IN\s*\(([^)]*)\)", text):
            found.update(re.findall(r"'(\w+)'", listed))
    assert found and found <= set(Job.Status.values)
    assert set(Job.Status.values) - found == set()  # every status is spelled somewhere, so checked here


@pytest.mark.parametrize("statement", ["rows.pending_by_key", "enqueue.upsert", "graph.insert_graph"])
def test_a_statement_returning_whole_jobs_returns_the_models_columns_in_order(statement):
    text = flat(STATEMENTS[statement])
    listed = re.search(r"(?:RETURNING|SELECT) (id, queue_id, task_name, .*?)(?: FROM |$)", text).group(1)
    columns = [column.strip().removesuffix("::text") for column in listed.split(",")]
    assert columns == [field.column for field in Job._meta.concrete_fields]


def test_the_two_claim_statements_share_their_queues_room_and_returned_columns():
    serial, tenants, rest = claims.SQL["claim_serial"], claims.SQL["claim_tenants"], claims.SQL["claim"]
    for start, end in (
        ("q AS (", "= %(on_loop)s::bool) )"),
        ("SELECT q.id, LEAST(", "END) AS n FROM q"),
        ("calls AS (", "c.serial_group FROM claimed c JOIN q ON q.id = c.queue_id"),
    ):
        assert between(serial, start, end) == between(rest, start, end) == between(tenants, start, end)
    tenant_room = ("tenant_room AS (", "JOIN room ON room.id = q.id )")
    assert between(serial, *tenant_room) == between(tenants, *tenant_room)
    for statement in (serial, tenants, rest):
        assert flat(statement).endswith("ORDER BY c.priority DESC, c.run_at, c.id")


def test_a_failure_and_a_lost_attempt_are_resolved_alike():
    assert between(outcomes.SQL["fail"], "upd AS (", "FROM settled) s") == between(
        outcomes.SQL["recover_expired"], "upd AS (", "FROM settled) s"
    )


def test_a_job_back_to_pending_gives_up_a_key_a_newer_job_holds_in_every_statement():
    key_unless_taken = [
        between(text, "key = CASE WHEN j.key IS NOT NULL", "THEN NULL ELSE j.key END")
        for text in (
            outcomes.SQL["fail"],
            outcomes.SQL["recover_expired"],
            outcomes.SQL["release"],
            actions.SQL["retry_failed"],
        )
    ]
    assert len(set(key_unless_taken)) == 1


def test_every_job_insert_meets_keys_on_the_index_of_jobs_not_started():
    target = "ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL"
    inserts = [name for name, text in STATEMENTS.items() if "INSERT INTO supaqueue_job " in flat(text) + " "]
    inserts = [n for n in inserts if n != "triggers.create_row_trigger_function"]  # it writes no key
    assert sorted(inserts) == [
        "enqueue.insert_batch",
        "enqueue.insert_many",
        "enqueue.insert_one",
        "enqueue.upsert",
        "graph.insert_graph",
    ]
    for name in inserts:
        assert target in flat(STATEMENTS[name]), name


def test_the_trigger_function_is_the_one_the_triggers_call():
    assert f"FUNCTION {triggers.ROW_TRIGGER_FUNCTION}()" in triggers.SQL["create_row_trigger_function"]


def test_the_notifications_go_to_the_channel_their_caller_passes():
    """The channels are constants.CHANNEL and CANCEL_CHANNEL, which workers LISTEN on: a parameter."""
    notifying = {name: text for name, text in STATEMENTS.items() if "pg_notify" in text}
    assert set(notifying) == {"outcomes.notify_queues", "outcomes.notify_groups", "actions.notify_cancelled"}
    for text in notifying.values():
        assert "pg_notify(%(channel)s," in text


def test_the_rate_wake_up_has_a_worker_s_constants_written_in():
    named = claims.rate_wake_statement(("a", "b"), 0.25)
    assert "%(" not in named
    assert "'{a,b}'::text[] IS NULL OR q.name = ANY('{a,b}'::text[])" in flat(named)
    assert "(q.rate_period + 0.25) * interval" in flat(named)
    assert "NULL::text[] IS NULL" in claims.rate_wake_statement(None, 0.1)

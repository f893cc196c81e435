"""The single enqueue's libpq path (queue/prepared.fetch_row), against a real server, in autocommit.

These tests commit, so they watch from a second connection what really landed.
"""

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction

from django_supaqueue.exceptions import InvalidOption
from django_supaqueue.models import Job
from django_supaqueue.worker.connection import connect
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def observer():
    """A connection of its own: it sees only what was committed."""
    with connect(application_name="observer") as conn:
        yield conn


def committed(observer) -> int:
    return observer.execute("SELECT count(*) FROM supaqueue_job").fetchone()[0]


def prepared_names() -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO%%'")
        return [r[0] for r in cur.fetchall()]


def test_in_autocommit_the_enqueue_is_prepared_once_by_name_and_committed(observer):
    first = tasks.add.enqueue(1, 1)
    second = tasks.add.enqueue(1, 2)
    assert prepared_names() == ["supaqueue_enqueue"]
    assert committed(observer) == 2
    stored = Job.objects.get(pk=second.pk)
    assert second.pk == first.pk + 1
    assert {k: v for k, v in second.__dict__.items() if k != "_state"} == {
        k: v for k, v in stored.__dict__.items() if k != "_state"
    }


def test_every_option_travels_through_libpq_as_the_cursor_would_send_it(observer):
    """Parameters go as text: an aware datetime in any zone, ints, keys; the Job comes back as stored."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    tasks.add.enqueue(0, 0)
    when = datetime(2031, 5, 4, 3, 2, 1, 123456, tzinfo=ZoneInfo("Pacific/Auckland"))
    options = tasks.add.using(priority=-7, max_attempts=2, queue="default")
    job = options.enqueue(1, b=2, run_at=when, key="k-é")
    later = tasks.noop.enqueue(i=3, run_at=timedelta(hours=1))
    assert prepared_names() == ["supaqueue_enqueue"]
    for returned in (job, later):
        stored = Job.objects.get(pk=returned.pk)
        assert {k: v for k, v in returned.__dict__.items() if k != "_state"} == {
            k: v for k, v in stored.__dict__.items() if k != "_state"
        }
    assert job.run_at == when and job.priority == -7 and job.max_attempts == 2 and job.key == "k-é"
    assert committed(observer) == 3


@pytest.mark.parametrize("statement_before", [False, True])
def test_in_an_atomic_block_the_enqueue_rolls_back_with_it(observer, statement_before):
    """Before the block's first statement, libpq would run the INSERT outside any
    transaction; the enqueue must still roll back with the block."""
    tasks.add.enqueue(1, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        if statement_before:
            Job.objects.exists()
        tasks.add.enqueue(2, 2)
        assert committed(observer) == 1
        raise RuntimeError("the caller's work failed")
    assert committed(observer) == 1
    with transaction.atomic():
        tasks.add.enqueue(3, 3)
    assert committed(observer) == 2


def test_a_statement_deallocated_behind_its_back_is_prepared_again(observer):
    tasks.add.enqueue(1, 1)
    tasks.noop.enqueue_many([{"i": 1}])  # psycopg prepares this one itself...
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.noop.enqueue(i=2)
        raise RuntimeError("...and runs DEALLOCATE ALL when this block rolls back")
    assert prepared_names() == []
    tasks.add.enqueue(1, 2)  # autocommit: the failed call wrote nothing, so it prepares again and retries
    assert prepared_names() == ["supaqueue_enqueue"]
    assert committed(observer) == 3

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("DEALLOCATE ALL")
        tasks.add.enqueue(1, 3)  # in a transaction the cursor path runs it: nothing to retry
    assert committed(observer) == 4


def test_a_connection_lost_mid_call_raises_operational_error_and_loses_nothing(observer):
    tasks.add.enqueue(1, 1)
    pid = connection.connection.info.backend_pid
    observer.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(OperationalError):
        tasks.add.enqueue(1, 2)
    connection.close_if_unusable_or_obsolete()
    assert connection.connection is None
    tasks.add.enqueue(1, 3)
    assert committed(observer) == 2


def test_a_nul_character_is_refused_not_cut_short(observer):
    """libpq ends a text parameter at its first NUL: "abc\\0def" would be stored as "abc"."""
    tasks.add.enqueue(0, 0)  # the queue exists: the statement would write the row
    with pytest.raises(InvalidOption, match="NUL"):
        tasks.add.enqueue(1, 1, key="abc\x00def")
    assert committed(observer) == 1
    assert tasks.add.enqueue(1, 1, key="abc").key == "abc"
    assert committed(observer) == 2


def test_an_error_raised_by_the_server_is_djangos_and_leaves_the_connection_usable(observer):
    observer.execute(
        """
        CREATE FUNCTION refuse_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.payload ->> 'label' = 'refuse' THEN
            RAISE EXCEPTION 'refused by policy' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_job BEFORE INSERT ON supaqueue_job FOR EACH ROW EXECUTE FUNCTION refuse_job();
        """
    )
    try:
        tasks.noop.enqueue(i=1)
        with pytest.raises(IntegrityError, match="refused by policy") as caught:
            tasks.record.enqueue(n=1, label="refuse")
        assert caught.value.__cause__.sqlstate == "23514"
        tasks.noop.enqueue(i=2)
        assert committed(observer) == 2
    finally:
        observer.execute("DROP TRIGGER refuse_job ON supaqueue_job; DROP FUNCTION refuse_job()")

"""System checks catch bad settings, tasks and model-change jobs at ``manage.py check`` time."""

from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_supaqueue import task
from django_supaqueue import tasks as registry
from django_supaqueue.change_jobs import enqueue_on_save
from django_supaqueue.checks import (
    check_change_jobs,
    check_settings,
    check_tasks,
    check_tasks_backend,
    installed_job_triggers,
)
from django_supaqueue.operations import InstallJobTrigger, RemoveJobTrigger
from tests.testapp import tasks
from tests.testapp.models import Ticket


def ids(settings_value, settings):
    settings.SUPAQUEUE = settings_value
    return sorted(m.id for m in check_settings())


def test_default_settings_pass(settings):
    assert ids({}, settings) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"CONCURENCY": 4}, "supaqueue.W001"),
        ({"DATABASE": "nope"}, "supaqueue.E001"),
        ({"MAX_ATTEMPTS": 0}, "supaqueue.E003"),
        ({"POLL_INTERVAL": "soon"}, "supaqueue.E004"),
        ({"LEASE_DURATION": 1, "HEARTBEAT_INTERVAL": 5}, "supaqueue.E005"),
        ({"PRIORITY": 500}, "supaqueue.E006"),
    ],
)
def test_bad_settings_are_reported(value, expected, settings):
    assert expected in ids(value, settings)


def test_manage_py_check_fails_on_an_error(settings):
    settings.SUPAQUEUE = {"MAX_ATTEMPTS": -1}
    with pytest.raises(SystemCheckError, match="MAX_ATTEMPTS"):
        call_command("check")


# -- model-change jobs, job triggers and tasks --------------------------------------------


class TicketsElsewhere:
    """A database router that writes tickets to another database than the queue's."""

    def db_for_write(self, model, **hints):
        return "archive" if model._meta.label == "testapp.Ticket" else None


@pytest.fixture
def connect():
    made = []
    yield lambda *args, **kwargs: made.append(enqueue_on_save(*args, **kwargs))
    for registration in made:
        registration.disconnect()


def change_job_messages():
    return [(m.id, m.msg) for m in check_change_jobs()]


def test_the_test_project_passes_every_supaqueue_check():
    assert check_settings() + check_tasks() + check_change_jobs() + check_tasks_backend() == []


def test_the_migrations_leave_the_test_apps_three_job_triggers_installed():
    installed = sorted((label, op.model_name, op.name) for label, op in installed_job_triggers())
    assert installed == [
        ("testapp", "product", "product_added"),
        ("testapp", "product", "product_removed"),
        ("testapp", "product", "product_repriced"),
    ]


def test_a_later_remove_job_trigger_uninstalls_a_trigger(monkeypatch):
    install = InstallJobTrigger(model_name="product", task="shop.tasks.sync", name="sync")
    migrations = {
        ("shop", "0001_trigger"): SimpleNamespace(operations=[install]),
        ("shop", "0002_no_trigger"): SimpleNamespace(
            operations=[RemoveJobTrigger(**install._constructor_args[1])]
        ),
    }
    graph = SimpleNamespace(
        nodes=migrations,
        leaf_nodes=lambda: [("shop", "0002_no_trigger")],
        forwards_plan=lambda leaf: list(migrations),
    )
    monkeypatch.setattr(
        "django.db.migrations.loader.MigrationLoader", lambda *a, **k: SimpleNamespace(graph=graph)
    )
    assert installed_job_triggers() == []


@pytest.mark.parametrize(
    ("task_name", "problem"),
    [
        ("tests.testapp.tasks.missing", "'tests.testapp.tasks.missing', which is not a registered task."),
        ("nowhere.tasks.job", "module 'nowhere.tasks' cannot be imported (ModuleNotFoundError"),
        ("tests.testapp.broken_tasks.job", "module raised RuntimeError: broken_tasks cannot be imported"),
    ],
)
def test_a_change_job_naming_a_task_that_does_not_resolve_is_an_error(connect, task_name, problem):
    connect(Ticket, task_name)
    ((check_id, message),) = change_job_messages()
    assert check_id == "supaqueue.E010" and problem in message


def test_a_task_that_cannot_take_the_payload_is_an_error(connect):
    connect(Ticket, tasks.add, payload="row")
    ((check_id, message),) = change_job_messages()
    assert check_id == "supaqueue.E011" and "keyword arguments ['row']" in message


def test_a_payload_or_changed_field_that_does_not_exist_is_an_error(connect):
    connect(Ticket, tasks.ticket_fields, payload=["title", "status", "colour"], changed=["size"])
    messages = dict(change_job_messages())
    fields = [m for m in change_job_messages() if m[0] == "supaqueue.E012"]
    assert [m[1].split(" names ")[1] for m in fields] == [
        "'colour', which is not a field with a column.",
        "'size', which is not a field with a column.",
    ]
    assert "got an unexpected keyword argument 'colour'" in messages["supaqueue.E011"]


def test_a_model_written_to_another_database_than_its_jobs_is_a_warning(connect, settings):
    settings.DATABASE_ROUTERS = ["tests.test_checks.TicketsElsewhere"]
    connect(Ticket, tasks.ticket_changed)
    ((check_id, message),) = change_job_messages()
    assert check_id == "supaqueue.W010" and "'archive': the job is not in the row's transaction" in message


def test_job_triggers_are_checked_like_signals(monkeypatch):
    trigger = InstallJobTrigger(
        model_name="product", task="tests.testapp.tasks.gone", payload=["sku", "colour"]
    )
    monkeypatch.setattr("django_supaqueue.checks.installed_job_triggers", lambda: [("testapp", trigger)])
    messages = change_job_messages()
    assert [m[0] for m in messages] == ["supaqueue.E012", "supaqueue.E010"]
    assert messages[1][1].startswith(f"Job trigger '{trigger.name}' on testapp.Product enqueues")


def test_a_task_no_worker_could_find_by_name_is_a_warning(monkeypatch):
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # this test's task goes with it

    @task(name="somewhere.else.job")
    def job():
        return None

    (message,) = check_tasks()
    assert message.id == "supaqueue.W011" and "defined in tests.test_checks" in message.msg


def test_manage_py_check_fails_on_a_change_job_error(connect):
    connect(Ticket, "tests.testapp.tasks.missing")
    with pytest.raises(SystemCheckError, match="supaqueue.E010"):
        call_command("check")


def test_a_setting_read_once_follows_override_settings_and_the_settings_fixture(settings):
    """conf.get keeps settings.SUPAQUEUE between calls; setting_changed must make it look again."""
    from django.test import override_settings

    from django_supaqueue import conf

    settings.SUPAQUEUE = {"CLAIM_BATCH": 5}
    assert conf.get("CLAIM_BATCH") == 5
    with override_settings(SUPAQUEUE={"CLAIM_BATCH": 7}):
        assert conf.get("CLAIM_BATCH") == 7
        assert conf.get("CONCURRENCY") == conf.DEFAULTS["CONCURRENCY"]
    assert conf.get("CLAIM_BATCH") == 5
    settings.SUPAQUEUE["CLAIM_BATCH"] = 6  # the same dict, changed in place
    assert conf.get("CLAIM_BATCH") == 6
    settings.SUPAQUEUE = {"CLAIM_BATCH": 8}
    assert conf.get("CLAIM_BATCH") == 8


@pytest.mark.django_db
def test_the_pooler_check_finds_no_pooler_on_a_direct_connection(monkeypatch):
    """It probes only the databases Django lets a database check use (pooled ones: test_pgbouncer.py)."""
    from django_supaqueue.checks import check_pooler
    from django_supaqueue.worker import pooler

    assert pooler.probe("default") == pooler.Pooling(pooled=False)
    monkeypatch.setattr(pooler, "probe", lambda alias: pytest.fail(f"probed {alias}"))
    assert check_pooler(databases=None) == [] and check_pooler(databases=["other"]) == []

"""Fixtures: real PostgreSQL, in-process workers, and worker processes under test (helpers in helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import django
import psycopg
import pytest

from django_supaqueue import queue as q
from django_supaqueue.models import Worker
from django_supaqueue.worker.connection import connect
from django_supaqueue.worker.process import WorkerProcess
from tests.helpers import RecordingServer, WorkerProcesses

# The fixtures users get: supaqueue, supaqueue_immediate.
pytest_plugins = ["django_supaqueue.testing"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked django6 need django.tasks: skipped, with the reason, on older Django."""
    if django.VERSION >= (6, 0):
        return
    skip = pytest.mark.skip(reason=f"needs Django 6 (django.tasks); this is Django {django.get_version()}")
    for item in items:
        if "django6" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def drain(transactional_db) -> Callable[..., WorkerProcess]:
    """Run an in-process worker in burst mode until nothing is runnable."""

    def run(queues: list[str] | None = None, concurrency: int = 4, **options) -> WorkerProcess:
        worker = WorkerProcess(queues=queues, concurrency=concurrency, burst=True, **options)
        worker.run(handle_signals=False)
        return worker

    return run


@pytest.fixture
def conn() -> Iterator[psycopg.Connection]:
    """A worker's own connection (autocommit), for exercising the queue's SQL directly."""
    c = connect()
    yield c
    c.close()


@pytest.fixture
def worker(conn) -> Worker:
    """The Worker row of a registered worker, for leases taken on ``conn``."""
    worker_id = q.register_worker(conn, name="w1", host="h", pid=1, queues=None, concurrency=10)
    return Worker.objects.get(pk=worker_id)


@pytest.fixture
def worker_processes(transactional_db, tmp_path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def staff_client(client, django_user_model):
    """``staff_client("view_job", ...)``: a client logged in as staff with just these permissions."""
    from django.contrib.auth.models import Permission

    def login(*codenames: str):
        user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        perms = Permission.objects.filter(content_type__app_label="supaqueue", codename__in=codenames)
        assert perms.count() == len(codenames), f"unknown permission among {codenames}"
        user.user_permissions.add(*perms)
        client.force_login(user)
        return client

    return login


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()

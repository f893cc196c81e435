"""Three hosts, one database: a drain shared by all, and a host cut off by its network.

Each host is a Linux network namespace with its own hostname (tests/netns.py)
running ``runworkers -p 2``, which reaches PostgreSQL through its link. Needs
root: skipped elsewhere, with the reason, unless SUPAQUEUE_REQUIRE_NETNS is set
(CI sets it), under which it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.models import Count

from django_supaqueue.models import CurrentJob, Job, JobEvent, Worker
from tests import netns
from tests.helpers import WorkerProcesses, database_url, job_statuses, wait_for
from tests.testapp import tasks

pytestmark = [pytest.mark.netns, pytest.mark.django_db(transaction=True)]

#: Short leases keep the partition test short; renewals stay well inside them on a busy machine.
LEASE = 5.0
FAST_LEASES = {"SUPAQUEUE_LEASE_DURATION": str(LEASE), "SUPAQUEUE_HEARTBEAT_INTERVAL": "0.5"}


class Cluster:
    """The hosts and the ``runworkers`` each runs."""

    def __init__(self, hosts: netns.Hosts, workers: WorkerProcesses) -> None:
        self.hosts = hosts
        self.workers = workers
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, host: netns.Host, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """``runworkers`` on ``host``, its DATABASE_URL the test database at the host's end of its link."""
        proc = self.workers.start(
            *args,
            env={"DATABASE_URL": netns.via(database_url(), host), **(env or {})},
            prefix=self.hosts.command(host, []),
        )
        self.procs[host.name] = proc
        return proc

    def log(self, host: netns.Host) -> str:
        return self.workers.log(self.procs[host.name])


@pytest.fixture
def cluster(worker_processes: WorkerProcesses) -> Iterator[Cluster]:
    reason = netns.unavailable()
    if reason:
        if os.environ.get("SUPAQUEUE_REQUIRE_NETNS"):
            pytest.fail(f"SUPAQUEUE_REQUIRE_NETNS is set, but {reason}")
        pytest.skip(reason)
    s = connection.settings_dict
    hosts = netns.Hosts(3, (s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)))
    try:
        yield Cluster(hosts, worker_processes)
    finally:
        for host in hosts:  # a partitioned host's workers could not say goodbye
            hosts.link(host, up=True)
        worker_processes.stop_all()
        hosts.close()


def host_of(worker_name: str) -> str:
    return worker_name.split(":", 1)[0]


def succeeded_once(n: int) -> None:
    per_job = JobEvent.objects.filter(kind=JobEvent.Kind.SUCCEEDED).values("job").annotate(c=Count("id"))
    assert per_job.count() == n and {r["c"] for r in per_job} == {1}


def test_three_hosts_drain_30000_jobs_each_successful_once(cluster):
    n = 30_000
    tasks.noop.enqueue_many([{"i": i} for i in range(n)])
    procs = [cluster.start(host, "--burst", "-p", "2") for host in cluster.hosts]
    for host, proc in zip(cluster.hosts, procs, strict=True):
        assert proc.wait(120) == 0, cluster.log(host)
    assert job_statuses() == {Job.Status.SUCCESSFUL: n}
    assert Job.objects.filter(attempts=1).count() == n
    assert JobEvent.objects.filter(kind=JobEvent.Kind.STARTED).count() == n
    succeeded_once(n)
    per_host: dict[str, int] = {}
    for name, c in (
        JobEvent.objects.filter(kind=JobEvent.Kind.SUCCEEDED)
        .values_list("worker_name")
        .annotate(c=Count("id"))
    ):
        per_host[host_of(name)] = per_host.get(host_of(name), 0) + c
    assert set(per_host) == {h.name for h in cluster.hosts}, per_host  # every host took its share
    print(f"jobs per host: {per_host}")


def test_a_cut_off_host_is_recovered_from_fenced_out_and_claims_again_once_back(cluster):
    a = cluster.hosts[0]
    for host in cluster.hosts:
        cluster.start(host, "-p", "2", "-c", "4", env=FAST_LEASES)
    wait_for(lambda: Worker.objects.count() == 6, 60)
    n = 120
    tasks.where.enqueue_many([{"seconds": 1.5, "n": i} for i in range(n)])
    wait_for(lambda: CurrentJob.objects.filter(worker__host=a.name).count() >= 4, 30)

    cluster.hosts.link(a, up=False)
    down = time.monotonic()
    time.sleep(1.0)  # what was already past the link has landed; nothing more will
    held = dict(CurrentJob.objects.filter(worker__host=a.name).values_list("job_id", "attempt"))
    assert held

    # The others recover what the cut-off host held once its leases expire, and finish everything.
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: n}, 90)
    recovered = time.monotonic() - down
    lost = JobEvent.objects.filter(
        job__in=list(held), kind=JobEvent.Kind.RETRIED, error_class="django_supaqueue.exceptions.WorkerLost"
    )
    assert set(held.items()) <= set(lost.values_list("job_id", "attempt"))
    assert not Job.objects.filter(pk__in=held, result=a.name).exists()
    # Silent for twice its lease, it is forgotten; it notices its dead connections itself.
    wait_for(lambda: not Worker.objects.filter(host=a.name).exists(), 30)
    time.sleep(max(0.0, down + 4 * LEASE - time.monotonic()))
    assert "lost its database connection" in cluster.log(a)

    cluster.hosts.link(a, up=True)
    up = time.monotonic()
    # Back, it registers again and claims: some of the new jobs run on it.
    wait_for(lambda: Worker.objects.filter(host=a.name).count() == 2, 120)
    back = time.monotonic() - up
    more = 300
    tasks.where.enqueue_many([{"seconds": 0.2, "n": n + i} for i in range(more)])
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: n + more}, 90)
    assert Job.objects.filter(result=a.name).exclude(pk__in=held).exists()
    # Its late outcomes (the held attempts ended while it was cut off) were fenced out:
    # one success per job, and for the held jobs, a later attempt's on another host.
    succeeded_once(n + more)
    for job_id, worker_name, attempt in JobEvent.objects.filter(
        job__in=list(held), kind=JobEvent.Kind.SUCCEEDED
    ).values_list("job_id", "worker_name", "attempt"):
        assert host_of(worker_name) != a.name and attempt > held[job_id]
    print(f"{len(held)} held; all done {recovered:.1f}s after the link went down, back {back:.1f}s after up")

"""The benchmark's ``hosts`` workload: one backlog drained by 1, 2 and 3 hosts at once.

Each host is a network namespace running ``runworkers -p 2`` (tests/netns.py),
reaching PostgreSQL through its link and the forwarder that stands in for the
server's network address. The backlog waits in a paused queue until every
host's workers are up, so the clock measures the drain, not start-up times.
Beside the raw baseline, the same drain by ``runworkers -p 2`` on loopback
shows what the forwarder costs, and the CPU columns show where the machine
runs out: workers and PostgreSQL share its cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from tests import netns

ROOT = Path(__file__).resolve().parent.parent
HOSTS = (1, 2, 3)


def run(bench: ModuleType, n: int, row: Callable[..., None]) -> None:
    """Add the workload's rows; print why it is skipped where namespaces cannot be made."""
    reason = netns.unavailable()
    if reason:
        print(f"hosts: skipped, {reason}", flush=True)
        return
    bench.reset()
    raw = bench.raw_drain(n, 10, batch=True)
    bench.reset()
    local, cpu = drain(bench, n, lambda: [bench.start_worker("-p", "2")], 2)
    row("drain, runworkers -p 2 on loopback", local, raw, raw_label="(100/stmt)")
    print(f"  {cpu}", flush=True)
    url = urlsplit(bench.DSN)
    hosts = netns.Hosts(max(HOSTS), (url.hostname or "127.0.0.1", url.port or 5432))
    rates: dict[int, float] = {}
    try:
        for count in HOSTS:
            bench.reset()

            def start(count: int = count) -> list[subprocess.Popen]:
                return [start_on(bench, hosts, host) for host in hosts.hosts[:count]]

            rates[count], cpu = drain(bench, n, start, 2 * count)
            row(f"drain, {count} host(s) x runworkers -p 2", rates[count], raw, raw_label="(100/stmt)")
            print(f"  {cpu}", flush=True)
    finally:
        hosts.close()
    print(flatten_line(rates, os.cpu_count() or 1), flush=True)


def start_on(bench: ModuleType, hosts: netns.Hosts, host: netns.Host) -> subprocess.Popen:
    return subprocess.Popen(
        hosts.command(host, [sys.executable, "-m", "django", "runworkers", "-p", "2"]),
        cwd=ROOT,
        env=bench.worker_env(DATABASE_URL=netns.via(bench.DSN, host)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def drain(
    bench: ModuleType, n: int, start: Callable[[], list[subprocess.Popen]], processes: int
) -> tuple[float, str]:
    """Jobs/s draining an n-job backlog released once ``processes`` workers are up; and the CPU use."""
    from django_supaqueue.models import Worker
    from django_supaqueue.queue.actions import pause_queues, resume_queues
    from tests.testapp.tasks import noop

    noop.enqueue_many([{"i": 0}])  # creates the queue, to pause it
    pause_queues(["default"])
    for first in range(0, n - 1, 50_000):
        noop.enqueue_many([{"i": i} for i in range(first, min(n - 1, first + 50_000))])
    with bench.conn() as c:
        c.execute("VACUUM ANALYZE supaqueue_job")
        c.execute("CHECKPOINT")
    procs = start()
    try:
        deadline = time.monotonic() + 120
        while Worker.objects.count() < processes and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # every claim loop is listening
        before = cpu_times()
        t = time.perf_counter()
        resume_queues(["default"])
        while bench.remaining() > 0:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t
        after = cpu_times()
    finally:
        for proc in procs:
            bench.stop(proc)
    return n / elapsed, cpu_use(before, after)


def cpu_times() -> tuple[float, float, float, float]:
    """Seconds of CPU: the machine's busy and total time, PostgreSQL's processes' (all databases),
    and this process's (the forwarder, which a real network does not cost)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name.startswith("postgres"):
            postgres += (float(rest[11]) + float(rest[12])) / tick
    me = os.times()
    return (sum(fields) - idle) / tick, sum(fields) / tick, postgres, me.user + me.system


def cpu_use(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    busy, total, postgres, forwarder = (a - b for a, b in zip(after, before, strict=True))
    cores = os.cpu_count() or 1
    return (
        f"CPU while draining: {busy / total:.0%} of {cores} cores busy; PostgreSQL {postgres / total:.0%}, "
        f"forwarder {forwarder / total:.0%}, workers and the rest {(busy - postgres - forwarder) / total:.0%}"
    )


def flatten_line(rates: dict[int, float], cores: int) -> str:
    """Where adding a host stops paying: the first step that gains less than a fifth."""
    steps = [(k, rates[k] / rates[k - 1] - 1) for k in sorted(rates) if k - 1 in rates]
    gains = ", ".join(f"{k - 1}->{k} hosts {g:+.0%}" for k, g in steps)
    flat = next((k - 1 for k, g in steps if g < 0.2), None)
    where = f"no gain past {flat} host(s)" if flat else f"still gaining at {max(rates)} hosts"
    return (
        f"hosts: {gains}: {where} on this {cores}-core machine, where the workers and PostgreSQL "
        "share the cores (see the CPU lines)"
    )

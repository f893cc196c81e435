#!/usr/bin/env python3
"""The benchmark: ``python3 benchmarks/benchmark.py [--quick] [--only NAME,...]``.

Runs each workload against a throwaway database (created and dropped here) and,
in the same run, the raw psycopg baseline for the same work, then prints every
figure with its ratio to the baseline. The machine is noisy: read the ratios.

Workloads (no-op tasks): single enqueue (one transaction each) vs a raw INSERT;
bulk enqueue (``enqueue_many``) vs COPY; draining a 20,000-job backlog with one
worker process at concurrency 1 and 10 and with 2 processes, vs raw SKIP
LOCKED loops (one job per transaction, and 100 per statement); enqueue-to-start
latency with an idle worker vs a raw worker process that claims each job on its
NOTIFY (and the pick-up from the commit vs a bare LISTEN/NOTIFY round trip); draining with
1,000,000 future jobs in the table vs 10,000 (claim cost must stay flat); the
worker's peak memory; throughput with 1, 2 and 4 worker processes; draining
with 1, 2 and 3 hosts, each ``runworkers -p 2`` in a network namespace (``hosts``,
root only: benchmarks/many_hosts.py). One workload's tasks touch the database:
20,000 jobs that each do one ORM insert and one ORM read, under Django's default
CONN_MAX_AGE = 0, on 2 processes at c=10, vs the same two statements on 20
threads with a persistent connection each, and vs the same ORM calls on 2
processes of 10 threads without the queue (the ceiling: the ORM's own cost).
HTTP queues (``http``, benchmarks/http_bench.py): calls to a local endpoint
that answers after 50 ms, one ``runworkers -a 200`` process vs a bare aiohttp
client with 200 in flight; and the worker's memory with 1,000 calls in flight.
``async def`` tasks (``async``) that each await 50 ms: on an async queue, one
``runworkers -a 200`` process, and on a threads queue at c=10, vs bare asyncio
tasks with 200 in flight.

Not a test: nothing here asserts a time. ``--write-docs`` puts the table of a full run
on the documentation's performance page (docs/explanation/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DB", "supaqueue_bench")
TASK = "tests.testapp.tasks.noop"


def bootstrap() -> None:
    """Re-run inside the project's virtual environment (the one tests/run.py makes)."""
    if os.environ.get("SUPAQUEUE_BENCH_IN_VENV"):
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from run import ensure_venv

    python = ensure_venv()
    os.environ["SUPAQUEUE_BENCH_IN_VENV"] = "1"
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


bootstrap()

import psycopg  # noqa: E402

DSN = f"{SERVER}/{DB}"
#: The page that shows the current table, between these two marker lines.
DOCS_PAGE = ROOT / "docs" / "explanation" / "performance.md"
TABLE_START = "<!-- benchmark-table:start -->"
TABLE_END = "<!-- benchmark-table:end -->"


def admin_exec(sql: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def setup_database() -> None:
    admin_exec(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    admin_exec(f'CREATE DATABASE "{DB}"')
    env = worker_env()
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v", "0", "--settings=tests.settings"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    import django

    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    django.setup()


def worker_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DSN,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SUPAQUEUE_LOG_LEVEL": "WARNING",
        **extra,
    }


def conn() -> psycopg.Connection:
    return psycopg.connect(DSN, autocommit=True)


def reset() -> None:
    with conn() as c:
        c.execute("TRUNCATE supaqueue_job RESTART IDENTITY CASCADE")
        c.execute("TRUNCATE raw_jobs RESTART IDENTITY")
        c.execute("CHECKPOINT")


def remaining() -> int:
    with conn() as c:
        return c.execute(
            "SELECT count(*) FROM supaqueue_job WHERE status IN ('pending', 'in_progress')"
        ).fetchone()[0]


def busy() -> bool:
    """Whether runnable or running jobs are left: two probes of partial indexes, cheap enough to poll."""
    with conn() as c:
        return c.execute(
            "SELECT EXISTS (SELECT 1 FROM supaqueue_job WHERE status = 'pending' AND enabled "
            "AND run_at <= now()) OR EXISTS (SELECT 1 FROM supaqueue_job WHERE status = 'in_progress')"
        ).fetchone()[0]


def drained_rate() -> float:
    """Jobs/s of the drain just finished, by the database's clock: its finished jobs over the time
    from the first claim to the last outcome.

    Counting what is left while the workers drain would load the database under test
    with a count of the whole table every few milliseconds, which the raw loops do
    not have to bear; the drains wait on busy() and read their times here instead.
    """
    with conn() as c:
        n, seconds = c.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8 "
            "FROM supaqueue_job WHERE finished_at IS NOT NULL"
        ).fetchone()
    return n / seconds


# ---------------------------------------------------------------- raw baseline

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS raw_jobs (
  id bigserial PRIMARY KEY, queue text NOT NULL, payload jsonb NOT NULL, status text NOT NULL,
  attempts int NOT NULL DEFAULT 0, run_at timestamptz NOT NULL DEFAULT now(),
  priority int NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS raw_jobs_claim ON raw_jobs (queue, status, priority, run_at, id);
"""
RAW_CLAIM_ONE = """
UPDATE raw_jobs SET status = 'running', attempts = attempts + 1 WHERE id = (
  SELECT id FROM raw_jobs WHERE queue = 'q' AND status = 'queued' AND run_at <= now()
  ORDER BY priority, run_at, id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, payload
"""
RAW_CLAIM_BATCH = """
UPDATE raw_jobs SET status = 'running', attempts = attempts + 1 WHERE id IN (
  SELECT id FROM raw_jobs WHERE queue = 'q' AND status = 'queued' AND run_at <= now()
  ORDER BY priority, run_at, id FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING id, payload
"""


def raw_copy(c: psycopg.Connection, n: int) -> None:
    """``n`` raw jobs by COPY, in one transaction on ``c``."""
    with c.transaction(), c.cursor().copy("COPY raw_jobs (queue, payload, status) FROM STDIN") as copy:
        for i in range(n):
            copy.write_row(("q", f'{{"i": {i}}}', "queued"))


def raw_fill(n: int) -> None:
    with conn() as c:
        raw_copy(c, n)
        c.execute("ANALYZE raw_jobs")


def raw_enqueue_single(n: int) -> float:
    with conn() as c:
        t = time.perf_counter()
        for i in range(n):
            c.execute(
                "INSERT INTO raw_jobs (queue, payload, status) VALUES ('q', %s, 'queued')", [f'{{"i": {i}}}']
            )
        return n / (time.perf_counter() - t)


def raw_enqueue_copy(n: int) -> float:
    """COPY in one transaction on an open connection, as enqueue_many's is (no connect, no ANALYZE)."""
    with conn() as c:
        t = time.perf_counter()
        raw_copy(c, n)
        return n / (time.perf_counter() - t)


def interleaved(ours: Callable[[], float], raw: Callable[[], float], reps: int) -> tuple[float, float]:
    """Medians of ``reps`` runs of each, taken in turn on an emptied table: the machine's noise
    then falls on both alike."""
    got: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for into, run in zip(got, (ours, raw), strict=True):
            reset()
            into.append(run())
    return statistics.median(got[0]), statistics.median(got[1])


def raw_drain(n: int, threads: int, batch: bool) -> float:
    raw_fill(n)

    def loop() -> None:
        with conn() as c:
            while True:
                with c.transaction():
                    rows = c.execute(RAW_CLAIM_BATCH if batch else RAW_CLAIM_ONE).fetchall()
                if not rows:
                    return
                with c.transaction():
                    c.execute(
                        "UPDATE raw_jobs SET status = 'done' WHERE id = ANY(%s)", [[r[0] for r in rows]]
                    )

    t = time.perf_counter()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return n / (time.perf_counter() - t)


RAW_ORM_INSERT = (
    "INSERT INTO testapp_execution (label, n, pid, started, ended) VALUES ('orm', %s, 0, 0.0, NULL) "
    "RETURNING id"
)
RAW_ORM_READ = "SELECT id, label, n, pid, started, ended FROM testapp_execution WHERE id = %s LIMIT 21"


def raw_orm(n: int, threads: int) -> float:
    """The ORM workload's two statements, as Django sends them, on ``threads`` persistent connections."""

    def loop(share: range) -> None:
        with conn() as c:
            for i in share:
                (row_id,) = c.execute(RAW_ORM_INSERT, [i]).fetchone()
                c.execute(RAW_ORM_READ, [row_id]).fetchone()

    workers = [threading.Thread(target=loop, args=(range(k, n, threads),)) for k in range(threads)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return n / (time.perf_counter() - t)


#: The ORM workload's calls without the queue, in a process of its own: prints when it began and ended.
ORM_ALONE = """
import sys, threading, time, django
django.setup()
from tests.testapp.models import Execution
n, threads = int(sys.argv[1]), int(sys.argv[2])
def loop(share):
    for i in share:
        Execution.objects.get(pk=Execution.objects.create(label="orm", n=i, pid=0, started=0.0).pk)
workers = [threading.Thread(target=loop, args=(range(k, n, threads),)) for k in range(threads)]
began = time.time()
for w in workers: w.start()
for w in workers: w.join()
print(began, time.time())
"""


def orm_alone(n: int, processes: int, threads: int) -> float:
    """The same ORM calls as the ORM jobs, on as many processes and threads, without a queue."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ORM_ALONE, str(n // processes), str(threads)],
            cwd=ROOT,
            env=worker_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    spans = [tuple(map(float, p.communicate()[0].split())) for p in procs]
    return n / (max(end for _, end in spans) - min(began for began, _ in spans))


#: The raw pick-up loop, in a process of its own as a worker is: LISTEN, claim one job per
#: notification (RAW_CLAIM_ONE), and count from the time the producer put in the job to the claim's return.
RAW_PICKUP = f"""
import json, sys, time, psycopg
n, got = int(sys.argv[2]), []
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute("LISTEN raw_pickup")
    print("ready", flush=True)
    while len(got) < n:
        row = c.execute({RAW_CLAIM_ONE!r}).fetchone()
        if row is None:
            for _ in c.notifies(timeout=1.0, stop_after=1):
                pass
            continue
        got.append(time.time() - row[1]["t"])
print(json.dumps(got))
"""


def raw_pickup_latency(n: int) -> tuple[float, float]:
    """Milliseconds from a raw enqueue call (an INSERT and its NOTIFY, one autocommit statement)
    to a raw worker's claim of the job: the peer harness's raw baseline for latency."""
    import json

    from psycopg.types.json import Jsonb

    worker = subprocess.Popen(
        [sys.executable, "-c", RAW_PICKUP, DSN, str(n)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    with conn() as c:
        for _ in range(n):
            c.execute(
                "WITH j AS (INSERT INTO raw_jobs (queue, payload, status) VALUES ('q', %s, 'queued') "
                "RETURNING id) SELECT pg_notify('raw_pickup', '') FROM j",
                [Jsonb({"t": time.time()})],
            )
            time.sleep(0.02)
    got = json.loads(worker.communicate(timeout=60)[0])
    return percentile(got, 50) * 1000, percentile(got, 99) * 1000


def raw_notify_latency(n: int) -> tuple[float, float]:
    got: list[float] = []
    listener = conn()
    listener.execute("LISTEN raw_bench")
    done = threading.Event()

    def listen() -> None:
        for note in listener.notifies():
            got.append(time.time() - float(note.payload))
            if len(got) == n:
                done.set()
                return

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.2)
    with conn() as c:
        for _ in range(n):
            c.execute("SELECT pg_notify('raw_bench', %s)", [repr(time.time())])
            time.sleep(0.01)
    done.wait(10)
    listener.close()
    return percentile(got, 50) * 1000, percentile(got, 99) * 1000


# ---------------------------------------------------------------- django-supaqueue


def enqueue_single(n: int) -> float:
    from django.db import connection

    from tests.testapp.tasks import noop

    connection.ensure_connection()
    t = time.perf_counter()
    for i in range(n):
        noop.enqueue(i=i)
    return n / (time.perf_counter() - t)


def enqueue_bulk(n: int) -> float:
    from tests.testapp.tasks import noop

    t = time.perf_counter()
    noop.enqueue_many([{"i": i} for i in range(n)])
    return n / (time.perf_counter() - t)


def start_worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "runworkers", *args],
        cwd=ROOT,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mb(proc: subprocess.Popen) -> float:
    """Peak resident memory of a process and its children (VmHWM), in MB."""
    pids = [proc.pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        pids += [int(p) for p in out]
    except OSError:
        pass
    peak = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def drain(n: int, *worker_args: str, future: int = 0, task: object = None) -> tuple[float, float]:
    """Jobs/s draining an n-job backlog of ``task`` (first claim to last outcome); and peak RSS."""
    from tests.testapp.tasks import noop

    task = task or noop

    if future:
        with conn() as c:
            c.execute(
                "INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, "
                "attempts, max_attempts, enabled, last_error, created_at) "
                "SELECT q.id, %s, jsonb_build_object('i', g), '[]', 'pending', 0, now() + interval '1 day', "
                "0, 5, true, '', now() FROM generate_series(1, %s) g, supaqueue_queue q "
                "WHERE q.name = 'default'",
                [TASK, future],
            )
    for start in range(0, n, 50_000):
        task.enqueue_many([{"i": i} for i in range(start, min(n, start + 50_000))])
    with conn() as c:
        c.execute("VACUUM ANALYZE supaqueue_job")
        c.execute("CHECKPOINT")
    proc = start_worker(*worker_args)
    try:
        while busy():  # the future jobs stay pending, and are not runnable
            time.sleep(0.05)
        rate = drained_rate()
        rss = peak_rss_mb(proc)
    finally:
        stop(proc)
    return rate, rss


def async_drain(n: int, mode: str, *worker_args: str) -> float:
    """Jobs/s of one worker process draining ``n`` jobs that each await 50 ms, on a queue in ``mode``."""
    from django_supaqueue.models import Queue
    from tests.testapp.tasks import async_wait

    Queue.objects.update_or_create(name="bench_async", defaults={"execution_mode": mode})
    for start in range(0, n, 50_000):
        async_wait.enqueue_many([{"i": i} for i in range(start, min(n, start + 50_000))], queue="bench_async")
    proc = start_worker("-q", "bench_async", *worker_args)
    try:
        while busy():
            time.sleep(0.05)
        return drained_rate()
    finally:
        stop(proc)


def raw_async_waits(n: int, in_flight: int) -> float:
    """The same awaits as bare asyncio tasks, ``in_flight`` at once: the ceiling of the async lane."""
    import asyncio

    async def run() -> float:
        slots = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with slots:
                await asyncio.sleep(0.05)

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - t)

    return asyncio.run(run())


def claim_cost(future: int, rounds: int = 200, batch: int = 50) -> float:
    """Median milliseconds of one claim of ``batch`` jobs (its own transaction), with ``future``
    not-yet-due jobs in the table: the statement a worker sends, timed alone."""
    from django_supaqueue import queue as q
    from django_supaqueue.worker.connection import connect
    from tests.testapp.tasks import noop

    with conn() as c:
        c.execute(
            "INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, "
            "attempts, max_attempts, enabled, last_error, created_at) "
            "SELECT q.id, %s, jsonb_build_object('i', g), '[]', 'pending', 0, now() + interval '1 day', "
            "0, 5, true, '', now() FROM generate_series(1, %s) g, supaqueue_queue q "
            "WHERE q.name = 'default'",
            [TASK, future],
        )
    noop.enqueue_many([{"i": i} for i in range(rounds * batch)])
    with conn() as c:
        c.execute("VACUUM ANALYZE supaqueue_job")
        c.execute("CHECKPOINT")
    timings = []
    with connect() as worker:
        wid = q.register_worker(
            worker, name=f"bench-{future}", host="h", pid=1, queues=None, concurrency=batch
        )
        for _ in range(rounds):
            started = time.perf_counter()
            with worker.transaction():
                claimed = q.claim(
                    worker, worker_id=wid, worker_name="b", queues=None, limit=batch, lease_seconds=30
                )
            timings.append(time.perf_counter() - started)
            done = [q.Success(job_id=j.id, attempt=j.attempt, result=None, duration=0.0) for j in claimed]
            with worker.transaction():
                q.complete(worker, worker_id=wid, worker_name="b", successes=done)
    return percentile(timings, 50) * 1000


def latency(n: int) -> tuple[list[float], list[float]]:
    """Milliseconds from the enqueue call (as the peer harness counts, the producer's insert
    and commit included) and from its commit, to the task's start, with an idle worker."""
    from django_supaqueue.models import Job, Worker
    from tests.testapp.tasks import started_at

    proc = start_worker("-c", "1", "--poll-interval", "30")
    try:
        while not Worker.objects.exists():
            time.sleep(0.05)
        time.sleep(1.0)
        from_call, from_commit = [], []
        for _ in range(n):
            called = time.time()
            job = started_at.enqueue()
            committed = time.time()
            for _ in range(500):
                job.refresh_from_db(fields=["status", "result"])
                if job.status == Job.Status.SUCCESSFUL:
                    break
                time.sleep(0.002)
            from_call.append(job.result - called)
            from_commit.append(job.result - committed)
            time.sleep(0.02)
    finally:
        stop(proc)
    return [percentile(from_call, p) * 1000 for p in (50, 99)], [
        percentile(from_commit, p) * 1000 for p in (50, 99)
    ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, no 1M-row or scaling runs")
    parser.add_argument("--only", default="", help="comma-separated workloads to run")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"put the table on {DOCS_PAGE.relative_to(ROOT)} (a full run)",
    )
    args = parser.parse_args()
    if args.write_docs and (args.quick or args.only):
        parser.error("--write-docs takes a full run: leave out --quick and --only")
    only = set(filter(None, args.only.split(",")))
    n_single, n_bulk, n_drain, n_lat = (500, 5000, 5000, 50) if args.quick else (2000, 20000, 20000, 200)
    reps = 1 if args.quick else 5

    setup_database()
    with conn() as c:
        c.execute(RAW_TABLE)
    rows: list[tuple[str, str, str, str]] = []

    def want(name: str) -> bool:
        return not only or name in only

    def row(name: str, ours: float, raw: float | None, unit: str = "jobs/s", raw_label: str = "") -> None:
        ratio = f"{ours / raw:.2f}x" if raw else ""
        fmt = (lambda v: f"{v:,.0f}") if unit in ("jobs/s", "calls/s") else (lambda v: f"{v:.1f}")
        rows.append((name, f"{fmt(ours)} {unit}", f"{fmt(raw)} {raw_label}".strip() if raw else "", ratio))
        print(
            f"{name:<42} {fmt(ours):>10} {unit:<6} {'raw ' + fmt(raw) if raw else '':>14} {ratio}", flush=True
        )

    if want("enqueue"):
        ours, raw = interleaved(lambda: enqueue_single(n_single), lambda: raw_enqueue_single(n_single), reps)
        row("enqueue, one per transaction", ours, raw, raw_label="(INSERT)")
        ours, raw = interleaved(lambda: enqueue_bulk(n_bulk), lambda: raw_enqueue_copy(n_bulk), reps)
        row(f"enqueue_many ({n_bulk:,} jobs)", ours, raw, raw_label="(COPY)")
    if want("drain"):
        reset()
        raw1 = raw_drain(n_drain, 1, batch=False)
        reset()
        ours, rss1 = drain(n_drain, "-c", "1")
        row("drain, 1 process, c=1", ours, raw1, raw_label="(1 job/tx)")
        reset()
        raw10 = raw_drain(n_drain, 10, batch=False)
        reset()
        rawb = raw_drain(n_drain, 10, batch=True)
        reset()
        ours, rss10 = drain(n_drain, "-c", "10")
        row("drain, 1 process, c=10", ours, raw10, raw_label="(1 job/tx)")
        row("drain, 1 process, c=10 vs batched raw", ours, rawb, raw_label="(100/stmt)")
        reset()
        ours, _ = drain(n_drain, "-c", "10", "-p", "2")
        row("drain, 2 processes, c=10", ours, rawb, raw_label="(100/stmt)")
        row("peak worker RSS, c=1", rss1, None, unit="MB")
        row("peak worker RSS, c=10", rss10, None, unit="MB")
    if want("http"):
        import http_bench

        n_http = 1000 if args.quick else 3000
        with http_bench.Endpoint() as endpoint:
            raw = http_bench.raw_calls(endpoint.url + "/fast", n_http, 200)
            ours, rss, _ = http_bench.worker_calls(
                endpoint.url + "/fast", n_http, 200, start_worker, stop, peak_rss_mb
            )
            row("HTTP calls (50 ms), 1 process, -a 200", ours, raw, unit="calls/s", raw_label="(aiohttp)")
            row("peak worker RSS, -a 200", rss, None, unit="MB")
            _, rss, open_calls = http_bench.worker_calls(
                endpoint.url + "/slow", 2000, 1000, start_worker, stop, peak_rss_mb, endpoint
            )
            row(f"peak worker RSS, -a 1000 ({open_calls} open at once)", rss, None, unit="MB")
    if want("async"):
        n_async = 1000 if args.quick else 3000
        raw = raw_async_waits(n_async, 200)
        reset()
        ours = async_drain(n_async, "async", "-c", "1", "-a", "200")
        row("async def jobs (50 ms await), async queue, -a 200", ours, raw, raw_label="(asyncio, 200)")
        reset()
        threads = async_drain(n_async // 3, "threads", "-c", "10", "-a", "0")
        row("async def jobs (50 ms await), threads queue, c=10", threads, raw, raw_label="(asyncio, 200)")
    if want("orm"):
        from django.db import connection

        from tests.testapp.tasks import orm_insert_and_read

        # The workers read the same settings: Django's default, a new connection per request.
        assert connection.settings_dict["CONN_MAX_AGE"] == 0

        def emptied(run: Callable[[], float]) -> Callable[[], float]:
            def fresh() -> float:
                with conn() as c:
                    c.execute("TRUNCATE testapp_execution RESTART IDENTITY")
                return run()

            return fresh

        # Medians of three runs, the drain and the ORM alone taken in turn.
        ours, alone = interleaved(
            emptied(lambda: drain(n_drain, "-c", "10", "-p", "2", task=orm_insert_and_read)[0]),
            emptied(lambda: orm_alone(n_drain, 2, 10)),
            min(reps, 3),
        )
        raw = statistics.median(emptied(lambda: raw_orm(n_drain, 20))() for _ in range(min(reps, 3)))
        row("ORM jobs, 2 processes, c=10, CONN_MAX_AGE=0", ours, raw, raw_label="(20 threads)")
        row("ORM jobs vs the ORM calls without a queue", ours, alone, raw_label="(2x10 threads)")
    if want("latency"):
        reset()
        (p50, p99), (c50, c99) = latency(n_lat)
        reset()
        l50, l99 = raw_pickup_latency(n_lat)
        r50, r99 = raw_notify_latency(n_lat)
        row("latency p50 (enqueue call to start)", p50, l50, unit="ms", raw_label="(raw loop)")
        row("latency p99 (enqueue call to start)", p99, l99, unit="ms", raw_label="(raw loop)")
        row("pick-up p50 (commit to start)", c50, r50, unit="ms", raw_label="(NOTIFY)")
        row("pick-up p99 (commit to start)", c99, r99, unit="ms", raw_label="(NOTIFY)")
    if want("bigtable") and not args.quick:
        reset()
        small, _ = drain(n_drain, "-c", "10", future=10_000)
        reset()
        big, _ = drain(n_drain, "-c", "10", future=1_000_000)
        row("drain c=10 with 10k future jobs", small, None)
        row("drain c=10 with 1M future jobs", big, small, raw_label="(with 10k)")
        reset()
        small = claim_cost(10_000)
        reset()
        big = claim_cost(1_000_000)
        row("claim of 50 jobs, 10k future jobs", small, None, unit="ms")
        row("claim of 50 jobs, 1M future jobs", big, small, unit="ms", raw_label="(with 10k)")
    if want("hosts"):
        import many_hosts  # benchmarks/many_hosts.py: hosts as network namespaces (root only)

        many_hosts.run(sys.modules[__name__], 20_000 if args.quick else 60_000, row)
    if want("scaling") and not args.quick:
        base = None
        for procs in (1, 2, 4):
            reset()
            rate, _ = drain(n_drain, "-c", "10", "-p", str(procs))
            base = base or rate
            row(f"drain with {procs} worker process(es), c=10", rate, base, raw_label="(1 process)")

    with conn() as c:
        server = c.info.server_version // 10000
    admin_exec(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    table = markdown_table(rows)
    print("\n" + table)
    if args.write_docs:
        write_docs_table(f"A full run on a {os.cpu_count()}-core machine, PostgreSQL {server}:\n\n{table}")
        print(f"\nwrote the table to {DOCS_PAGE.relative_to(ROOT)}")


def markdown_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| workload | django-supaqueue | raw baseline | ratio |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_docs_table(text: str) -> None:
    """Replace what is between the performance page's two marker lines with ``text``."""
    page = DOCS_PAGE.read_text()
    head, start, rest = page.partition(TABLE_START)
    _old, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        sys.exit(f"{DOCS_PAGE} has lost its {TABLE_START} / {TABLE_END} lines")
    DOCS_PAGE.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    main()

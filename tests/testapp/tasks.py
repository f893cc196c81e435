"""Tasks used by the test suite (autodiscovered like any app's tasks.py)."""

import asyncio
import os
import time

from django_supaqueue import task

from .models import Execution, Product


@task
def add(a, b):
    return a + b


@task
def noop(i=0):
    return None


@task
def record(n, label="record"):
    Execution.objects.create(label=label, n=n, pid=os.getpid(), started=time.time())


@task
def started_at(n=0):
    """Returns the wall-clock time the body started (for latency tests)."""
    return time.time()


@task(queue="emails", max_attempts=7, priority=3)
def send_email(to):
    return f"sent to {to}"


@task(max_attempts=3)
def flaky(n, failures):
    """Fails ``failures`` times, then succeeds (counts its own runs)."""
    Execution.objects.create(label="flaky", n=n, pid=os.getpid(), started=time.time())
    runs = Execution.objects.filter(label="flaky", n=n).count()
    if runs <= failures:
        raise RuntimeError(f"flaky failure {runs}")
    return {"runs": runs}


@task(max_attempts=2)
def always_fails():
    raise ValueError("this task always fails")


@task
def returns_unserialisable():
    return object()


@task
def hold(n, seconds, label="hold"):
    """Occupies a slot for ``seconds`` and records the interval it ran in."""
    started = time.time()
    time.sleep(seconds)
    Execution.objects.create(label=label, n=n, pid=os.getpid(), started=started, ended=time.time())


@task(timeout=0.5, max_attempts=1)
def busy_loop(n, seconds):
    """A pure-Python loop that would run for ``seconds``; records itself only if it finishes."""
    deadline = time.time() + seconds
    x = 0
    while time.time() < deadline:
        x += 1
    Execution.objects.create(label="busy_loop", n=n, pid=os.getpid(), started=time.time())


@task
def sleep_then_record(n, seconds):
    """Blocked in C (time.sleep) for ``seconds``; the row appears only if it is never stopped."""
    time.sleep(seconds)
    Execution.objects.create(label="sleep_then_record", n=n, pid=os.getpid(), started=time.time())


@task(max_attempts=1)
def exit_process():
    """Takes down the process it runs in, as a segfault or os._exit in a C extension would."""
    os._exit(3)


@task
def whoami():
    return os.getpid()


# Jobs from model changes: each records what it was given, so tests can see the payload a run got.


@task
def index_article(id):
    Execution.objects.create(label="index_article", n=id, pid=os.getpid(), started=time.time())
    return {"indexed": id}


@task
def forget_article(row):
    Execution.objects.create(label="forget_article", n=row["id"], pid=os.getpid(), started=time.time())
    return row


@task
def ticket_changed(id):
    return {"id": id}


@task
def ticket_fields(title, status, amount=None, parent=None):
    return {"title": title, "status": status}


@task
def ticket_row(row):
    return row


@task
def product_added(id):
    Execution.objects.create(label="product_added", n=id, pid=os.getpid(), started=time.time())
    return {"id": id}


@task
def product_repriced(sku, price):
    return {"sku": sku, "price": price}


@task
def product_removed(row):
    return row


@task
def countdown(n):
    """Enqueues itself with n - 1 until n is 0: a task that enqueues work."""
    Execution.objects.create(label="countdown", n=n, pid=os.getpid(), started=time.time())
    if n > 0:
        countdown.enqueue(n - 1)
    return n


@task(max_attempts=1)
def add_product(sku):
    """Inserts a product; a duplicate sku is a database error inside the task."""
    Product.objects.create(sku=sku, name="added by a task", price=1)


@task
def gather(label="gather"):
    """Returns what its dependencies returned (pipelines)."""
    from django_supaqueue import dependency_results

    Execution.objects.create(label=label, n=0, pid=os.getpid(), started=time.time())
    return {"inputs": dependency_results()}


@task
def step(n, label="step"):
    """Records when it started and ended, and returns n (pipelines run steps in order)."""
    row = Execution.objects.create(label=label, n=n, pid=os.getpid(), started=time.time())
    Execution.objects.filter(pk=row.pk).update(ended=time.time())
    return n


_census_lock = __import__("threading").Lock()
_census = {"running": 0, "most_running": 0, "most_leased": 0}


@task
def census(n, seconds=0.0):
    """Notes how many bodies run at once in this process and how many jobs are leased (prefetch tests)."""
    from django_supaqueue.models import CurrentJob

    with _census_lock:
        _census["running"] += 1
        _census["most_running"] = max(_census["most_running"], _census["running"])
    leased = CurrentJob.objects.count()
    try:
        time.sleep(seconds)
    finally:
        with _census_lock:
            _census["running"] -= 1
            _census["most_leased"] = max(_census["most_leased"], leased)
    return leased


# Outcomes PostgreSQL cannot store as they are (tests/test_unstorable.py).


@task(max_attempts=1)
def returns_nul():
    return "a\x00b"


@task(max_attempts=1)
def raises_nul():
    raise ValueError("x\x00y")


@task(max_attempts=1)
def returns_lone_surrogate():
    return "\ud800"


# Interrupted attempts (tests/test_interrupts.py): each run is one Execution row, written
# when the body starts; ``ended`` is written in ``finally``, so even an interrupted body
# records when it really stopped.


def _run_recorded(label, n, body):
    run = Execution.objects.create(label=label, n=n, pid=os.getpid(), started=time.time())
    try:
        return body()
    finally:
        Execution.objects.filter(pk=run.pk).update(ended=time.time())


@task
def nap(n, seconds, label="nap"):
    """Sleeps in short naps: an interrupt lands within 10 ms. Returns only if never interrupted."""

    def body():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return "finished"

    return _run_recorded(label, n, body)


@task(timeout=1, max_attempts=2)
def blocked_past_timeout(n, seconds=4):
    """Blocked in C (one time.sleep) past its 1 s timeout: an interrupt lands only when it returns."""
    return _run_recorded("blocked", n, lambda: time.sleep(seconds))


@task(timeout=0.5, max_attempts=1)
def swallows_everything(n):
    """Catches every Exception around a pure-Python loop, as careless task code does."""

    def body():
        deadline = time.monotonic() + 3
        swallowed = 0
        while time.monotonic() < deadline:
            try:
                sum(range(1000))
            except Exception:  # noqa: BLE001  the point of the task
                swallowed += 1
        return swallowed

    return _run_recorded("swallows", n, body)


@task
def sleeps(n, seconds, label="sleeps"):
    """Blocked in C (one time.sleep) for ``seconds``: an interrupt lands only when the sleep returns."""
    return _run_recorded(label, n, lambda: time.sleep(seconds))


# Job threads' Django connections (tests/test_job_connections.py) and the benchmark's ORM
# workload (benchmarks/benchmark.py --only orm), issue 22.


def _backend_pid():
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@task
def backend_pid(n, label="backend", seconds=0.0):
    """Records (in ``pid``) and returns the server process its ORM query ran on."""
    pid = _backend_pid()
    Execution.objects.create(label=label, n=n, pid=pid, started=time.time())
    time.sleep(seconds)
    return pid


@task(max_attempts=1)
def leaves_transaction_open(n, how):
    """Writes a row in a transaction it never ends: an atomic block, autocommit off, or a BEGIN."""
    from django.db import connection, transaction

    if how == "atomic":
        transaction.atomic().__enter__()
    elif how == "autocommit":
        transaction.set_autocommit(False)
    else:
        with connection.cursor() as cur:
            cur.execute("BEGIN")
    Execution.objects.create(label="uncommitted", n=n, pid=_backend_pid(), started=time.time())
    return _backend_pid()


@task(max_attempts=1)
def breaks_its_connection(n, how):
    """Fails after breaking its connection: its server process terminated, or an error inside atomic."""
    from django.db import connections, transaction

    if how == "terminated":
        pid = _backend_pid()
        with connections["listen"].cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        connections["listen"].close()
        Execution.objects.count()  # on the dead connection: raises
    with transaction.atomic():
        Execution.objects.create(label="rolled back", n=n, pid=_backend_pid(), started=time.time())
        with connections["default"].cursor() as cur:
            cur.execute("SELECT 1 / 0")


@task
def orm_insert_and_read(i=0):
    """One ORM insert and one ORM read: the benchmark's jobs that touch the database."""
    row = Execution.objects.create(label="orm", n=i, pid=0, started=0.0)
    Execution.objects.get(pk=row.pk)


@task
def where(seconds=0.0, n=0):
    """Holds a slot without the database, which a partitioned host cannot reach, and returns the
    hostname it ran on (tests/test_many_hosts.py gives each host its own)."""
    import socket

    time.sleep(seconds)
    return socket.gethostname()


# async def tasks (tests/test_async_tasks.py): the ORM through its async API, interrupts as cancellation.


async def _arun_recorded(label, n, body):
    run = await Execution.objects.acreate(label=label, n=n, pid=os.getpid(), started=time.time())
    try:
        return await body()
    finally:
        await Execution.objects.filter(pk=run.pk).aupdate(ended=time.time())


@task
async def async_double(n):
    """Awaits the ORM and a sleep, then returns twice ``n``."""
    await Execution.objects.acreate(label="async_double", n=n, pid=os.getpid(), started=time.time())
    await asyncio.sleep(0.01)
    return n * 2


@task(max_attempts=2)
async def async_fails(n):
    await asyncio.sleep(0)
    raise ValueError(f"async failure {n}")


@task
async def async_naps(n, seconds, label="async_naps"):
    """Awaits one long sleep: a cancel stops it at that await, and its ``finally`` still runs."""
    return await _arun_recorded(label, n, lambda: asyncio.sleep(seconds, "finished"))


@task(timeout=0.5, max_attempts=1)
async def async_past_timeout(n, seconds=10):
    return await _arun_recorded("async_timeout", n, lambda: asyncio.sleep(seconds, "finished"))


@task(timeout=0.5, max_attempts=1)
async def async_swallows_cancellation(n):
    """Catches its cancellation and returns, as careless async code does."""

    async def body():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "swallowed"
        return "finished"

    return await _arun_recorded("async_swallows", n, body)


@task(max_attempts=1)
async def async_blocks(n, seconds):
    """Calls time.sleep in a coroutine: it blocks the event loop it runs on."""
    time.sleep(seconds)
    return n


@task
async def async_wait(i=0, seconds=0.05):
    """Awaits ``seconds`` and returns: the benchmark's async workload (benchmarks/benchmark.py)."""
    await asyncio.sleep(seconds)

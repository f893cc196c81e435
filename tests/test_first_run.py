"""The README's first command on a fresh clone: no venv, no database, DATABASE_URL unset.

Each run installs from PyPI into a new virtual environment and starts an
embedded PostgreSQL 18, so these tests are slow and marked ``first_run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from example_project.database import stop_server

pytestmark = pytest.mark.first_run

ROOT = Path(__file__).resolve().parent.parent
#: Seconds one run may take: the first creates a venv and installs Django, psycopg and PostgreSQL.
RUN_TIMEOUT = 900
#: Variables of this test run that must not leak into a newcomer's first run.
NOT_INHERITED = (
    "DATABASE_URL",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONPATH",
    "SUPAQUEUE_LOG_LEVEL",
    "SUPAQUEUE_TEST_DB",
    "SUPAQUEUE_VENV",
    "VIRTUAL_ENV",
)
#: The summary's lines for the pipeline and the schedule, which fired at least once (by hand or on its tick).
#: Its next run is a time to come, or "due now" when the minute turned after the last worker stopped.
PIPELINE_DONE = "the last step returned 'shipping mail for order DEMO-1 sent, tracking TRK-DEMO-1-3'"
SCHEDULE_FIRED = re.compile(
    r"^schedule 'orders-report' \(\* \* \* \* \*, UTC\): last run \d\d:\d\d:\d\d (by hand|on its cron tick), "
    r"job \d+ successful; next run (due now \(missed while no worker ran: the workers fire it\), then )?"
    r"\d\d:\d\d:\d\d$",
    re.MULTILINE,
)
#: A second run counts only its own jobs: the three demo orders exist, their confirmations are not redone.
SECOND_RUN_JOBS = 28 - 3


#: Run with the clone's Python in the clone after a run: the newest job of each key on the demo's HTTP
#: queue, with its status and the HTTP status of each of its events, as JSON on the last line.
HTTP_JOBS_SCRIPT = """
import json, sys
sys.path.insert(0, ".")
import psycopg
from example_project.database import DATA_DIR, DATABASE_NAME, embedded_server
with embedded_server(DATA_DIR) as socket_dir:
    with psycopg.connect(host=str(socket_dir), user="postgres", dbname=DATABASE_NAME) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (j.key) j.key, j.status, ARRAY(SELECT e.http_status"
            " FROM supaqueue_jobevent e WHERE e.job_id = j.id AND e.http_status IS NOT NULL ORDER BY e.id)"
            " FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id"
            " WHERE q.name = 'webhooks' ORDER BY j.key, j.id DESC"
        ).fetchall()
print(json.dumps(rows))
"""


@dataclass
class Run:
    status: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def clone() -> Iterator[Path]:
    """The repository's tracked files, as they are in the working tree, in a fresh folder.

    Like a clone, the copy leaves out files git does not track: ``git add`` a new file to include it.
    The folder is not one of pytest's numbered temporary folders: another pytest session on the
    machine prunes those, and would delete the data folder under the running server.
    """
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    target = Path(tempfile.mkdtemp(prefix="supaqueue-first-run-"))
    copy_tracked_files(target)
    try:
        yield target
        stop_server(target / ".run" / "pgdata")
        assert not processes_under(target), "processes of the clone were left running"
    finally:
        stop_server(target / ".run" / "pgdata")
        shutil.rmtree(target, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(clone: Path) -> Run:
    return run_once(clone)


def copy_tracked_files(target: Path) -> None:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_once(clone: Path) -> Run:
    """``python3 example_project/run.py --once`` in ``clone``; on timeout it is stopped like Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "example_project/run.py", "--once"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        pytest.fail(f"run.py --once took more than {RUN_TIMEOUT}s:\n{output}")
    return Run(proc.returncode, output, time.monotonic() - started)


def http_jobs(clone: Path) -> dict[str, tuple[str, list[int]]]:
    """Per key of the demo's HTTP queue: its newest job's status and the HTTP statuses of its events."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    result = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", HTTP_JOBS_SCRIPT],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {key: (status, statuses) for key, status, statuses in json.loads(result.stdout.splitlines()[-1])}


def processes_under(folder: Path) -> list[str]:
    """Command lines that mention ``folder``: run.py, manage.py children, the embedded server."""
    prefix = f"{folder}{os.sep}"
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(prefix in arg for arg in args):
            found.append(" ".join(args))
    return found


def test_the_first_run_completes_the_demo_workload_on_an_embedded_server(first_run: Run, clone: Path):
    assert first_run.status == 0, first_run.output
    assert "creating .venv" in first_run.output
    assert "embedded PostgreSQL running" in first_run.output
    assert "created the demo admin login" in first_run.output
    assert "web server answering on http://127.0.0.1:" in first_run.output
    assert "demo workload complete: all 28 jobs successful" in first_run.output
    assert "webhooks 7" in first_run.output and "HTTP calls answered: 7 x HTTP 200" in first_run.output
    assert PIPELINE_DONE in first_run.output
    assert SCHEDULE_FIRED.search(first_run.output), first_run.output
    assert "embedded PostgreSQL stopped" in first_run.output
    assert not (clone / ".run" / "pgdata" / "postmaster.pid").exists()
    assert not processes_under(clone)


def test_the_http_queue_called_the_example_projects_own_web_server(first_run: Run, clone: Path):
    assert first_run.status == 0, first_run.output
    assert 'POST /demo/webhook/ HTTP/1.1" 200' in first_run.output  # runserver's log of each call
    jobs = http_jobs(clone)
    assert len(jobs) == 7  # six parcel bookings and the pipeline's call to the carrier
    assert {key: status for key, (status, _statuses) in jobs.items()} == dict.fromkeys(jobs, "successful")
    assert {key: set(statuses) for key, (_status, statuses) in jobs.items()} == dict.fromkeys(jobs, {200})
    assert not processes_under(clone)


def test_a_second_run_reuses_the_venv_the_data_and_the_admin_login(first_run: Run, clone: Path):
    assert first_run.status == 0, first_run.output
    again = run_once(clone)
    assert again.status == 0, again.output
    assert "installing" not in again.output
    assert "created the demo admin login" not in again.output
    assert "manage.py changepassword admin" in again.output  # how to get in without the first password
    assert f"demo workload complete: all {SECOND_RUN_JOBS} jobs successful" in again.output
    assert "HTTP calls answered: 7 x HTTP 200" in again.output
    assert PIPELINE_DONE in again.output
    assert SCHEDULE_FIRED.search(again.output), again.output
    assert not processes_under(clone)

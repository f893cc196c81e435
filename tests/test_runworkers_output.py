"""What ``manage.py runworkers`` prints in a project without a LOGGING setting, at each ``-v``.

Each test runs real worker processes with SUPAQUEUE_TEST_NO_LOGGING=1, which
leaves tests/settings.py's LOGGING unset, as in a new project.
"""

import json
import re
import signal

import pytest

from django_supaqueue import __version__
from django_supaqueue.models import Job
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

NO_LOGGING = {"SUPAQUEUE_TEST_NO_LOGGING": "1"}
CLOCK = r"\d\d:\d\d:\d\d"


def run_burst(worker_processes, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``runworkers --burst`` to the end; its output."""
    proc = worker_processes.start("--burst", "-c", "2", *args, env=env if env is not None else NO_LOGGING)
    assert proc.wait(60) == 0, worker_processes.log(proc)
    return worker_processes.log(proc)


def test_the_default_output_is_a_banner_the_failures_with_their_fate_and_a_stop_line(worker_processes):
    tasks.add.enqueue(1, 2)
    tasks.always_fails.enqueue()  # attempt 1 is retried at once (no back-off in the tests), 2 is final
    log = run_burst(worker_processes)
    assert re.search(
        rf"django-supaqueue {re.escape(__version__)} starting: database default \(.+/test_\w+\), "
        r"queues \* \(every queue\), concurrency 2, async concurrency 100, processes 1, schedules synced \(",
        log,
    ), log
    assert re.search(r"worker \S+ ready: queues=\*", log), log
    assert re.search(
        rf"WARNING job \d+ \(tests\.testapp\.tasks\.always_fails\) attempt 1 failed: ValueError: "
        rf"this task always fails; retry at {CLOCK} \(attempt 2 of 2\)",
        log,
    ), log
    assert re.search(
        r"ERROR job \d+ \(tests\.testapp\.tasks\.always_fails\) attempt 2 failed: ValueError: "
        r"this task always fails; failed for good \(attempt 2 of 2\)",
        log,
    ), log
    assert re.search(r"worker \S+ stopped after 3 jobs", log), log
    assert "succeeded" not in log  # a line per success is -v 2's


def test_verbosity_2_adds_a_line_per_finished_attempt(worker_processes):
    jobs = [tasks.add.enqueue(i, i) for i in range(3)]
    log = run_burst(worker_processes, "-v", "2")
    for job in jobs:
        assert re.search(
            rf"job {job.pk} \(tests\.testapp\.tasks\.add\) attempt 1 succeeded in \d+\.\d+m?s", log
        )


def test_verbosity_0_keeps_only_warnings_and_errors(worker_processes):
    tasks.add.enqueue(1, 2)
    tasks.always_fails.enqueue()
    log = run_burst(worker_processes, "-v", "0")
    assert "starting" not in log and "ready" not in log and "stopped" not in log, log
    assert "retry at" in log and "failed for good" in log, log


def test_json_lines_carry_the_attempts_fields(worker_processes):
    ok = tasks.add.enqueue(1, 2)
    bad = tasks.always_fails.enqueue()
    log = run_burst(worker_processes, "-v", "2", "--log-format", "json")
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    banner = next(r for r in records if "starting" in r["message"])
    assert banner["version"] == __version__ and banner["processes"] == 1 and banner["concurrency"] == 2
    attempts = {(r["job_id"], r["attempt"]): r for r in records if "attempt" in r}
    success = attempts[(ok.pk, 1)]
    assert success["level"] == "INFO" and success["outcome"] == "succeeded"
    assert success["queue"] == "default" and success["task"] == "tests.testapp.tasks.add"
    assert isinstance(success["duration"], float)
    retried, final = attempts[(bad.pk, 1)], attempts[(bad.pk, 2)]
    assert (retried["level"], retried["outcome"], final["level"], final["outcome"]) == (
        "WARNING",
        "retry",
        "ERROR",
        "failed",
    )
    assert retried["retry_at"] and retried["error_class"] == "ValueError"


def test_each_process_of_a_supervisor_speaks_and_the_stop_is_announced(worker_processes):
    proc = worker_processes.start("-p", "2", "-c", "1", env=NO_LOGGING)
    wait_for(lambda: len(re.findall(r"worker \S+ ready", worker_processes.log(proc))) == 2, 30)
    tasks.add.enqueue(1, 2)
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = worker_processes.log(proc)
    assert "processes 2" in log
    assert "SIGTERM received" in log
    assert len(re.findall(r"worker \S+ stopped after \d+ jobs", log)) == 2, log
    assert "supervisor: all 2 worker processes stopped" in log, log


def test_a_project_logging_setting_is_left_to_decide(worker_processes):
    tasks.add.enqueue(1, 2)
    log = run_burst(worker_processes, "-v", "2", env={"SUPAQUEUE_LOG_LEVEL": "WARNING"})
    assert log == "", log  # tests/settings.py routes django_supaqueue at WARNING: -v does not override it

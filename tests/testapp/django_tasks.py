"""Tasks written against Django's own Tasks API (Django 6+), run by SupaqueueBackend.

Not a tasks.py: nothing imports it at start-up, so a worker finds each task by
the module path its jobs name, as it would in a user's project.
"""

import asyncio
import os
import time

from django.tasks import task

from .models import Execution


@task
def multiply(a, b):
    return a * b


@task(takes_context=True)
def describe_attempt(context, label):
    result = context.task_result
    return {
        "label": label,
        "attempt": context.attempt,
        "id": result.id,
        "status": result.status,
        "worker_ids": result.worker_ids,
    }


@task
def fail_twice(n):
    """Raises on its first two runs, then returns how many runs it took."""
    Execution.objects.create(label="fail_twice", n=n, pid=os.getpid(), started=time.time())
    runs = Execution.objects.filter(label="fail_twice", n=n).count()
    if runs <= 2:
        raise ValueError(f"attempt {runs} failed")
    return runs


@task
def always_fails():
    raise KeyError("missing")


@task
def record(label, n):
    Execution.objects.create(label=label, n=n, pid=os.getpid(), started=time.time())


@task
async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


@task
async def async_sleep(seconds):
    """One long await: a timeout cancels it there."""
    await asyncio.sleep(seconds)
    return "finished"


@task
def spin(seconds):
    """A pure-Python loop: a timeout stops it at its next instruction."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        pass
    return "finished"

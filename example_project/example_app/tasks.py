"""Example tasks: autodiscovered because this app is in INSTALLED_APPS."""

import random

from django_supaqueue import task


@task(queue="emails", max_attempts=5)
def send_welcome(user_id: int) -> str:
    """Pretend to send an e-mail; the "emails" queue runs at most two at once."""
    return f"welcome mail sent to user {user_id}"


@task
def add(a: int, b: int) -> int:
    return a + b


@task(max_attempts=4, retry_backoff=0.5)
def unreliable(n: int) -> str:
    """Fails now and then, so the admin shows retries; it succeeds in the end."""
    if random.random() < 0.5:
        raise ConnectionError(f"upstream hiccup while handling {n}")
    return f"handled {n}"

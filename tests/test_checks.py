"""System checks catch bad SUPAQUEUE settings at ``manage.py check`` time."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_supaqueue.checks import check_settings


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

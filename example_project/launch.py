"""Stage two of the run command, inside the virtual environment run.py prepared.

Reads the flags, takes the database (an embedded server unless DATABASE_URL
is set), sets Django up on it and hands over to ``demo``. Whatever happens
afterwards, Django's connections are closed before the database is stopped.
"""

from __future__ import annotations

import argparse
import os
import sys

from example_project.database import database_url
from example_project.processes import ignore_interrupts, stop_on_signals

SETTINGS = "example_project.settings"
DEFAULT_PORT = 8000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 example_project/run.py",
        description="Set up and run the django-supaqueue example project.",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run the demo workload to completion with burst workers, then exit (non-interactive)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help=f"web server port (default {DEFAULT_PORT}, or a free one)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="with --once: seconds to wait for the workload before giving up (default 300)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the demo. Exit status: 0 on success and on Ctrl-C while serving, 130 if set-up is cut short."""
    args = parse_args(argv)
    stop_on_signals()
    try:
        with database_url() as url:
            try:
                return _run_django(args, url)
            finally:
                ignore_interrupts()
                _close_connections()
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130


def _run_django(args: argparse.Namespace, url: str) -> int:
    os.environ["DATABASE_URL"] = url  # also read by the manage.py children
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup()
    from example_project import demo  # its imports need the app registry

    return demo.run(once=args.once, timeout=args.timeout, port=args.port or DEFAULT_PORT)


def _close_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()

#!/usr/bin/env python3
"""Run the test suite from a fresh checkout: ``python3 tests/run.py [pytest args]``.

Creates a virtual environment (``.venv``, or $SUPAQUEUE_VENV) with the
interpreter that runs this script, installs the package with its test extras
($SUPAQUEUE_EXTRAS, default ``test``; ``test,browser`` adds Playwright for the
admin's browser tests) when pyproject.toml or the extras changed, checks that
PostgreSQL answers, and runs pytest.
Tests use $DATABASE_URL (default postgres://postgres@127.0.0.1:5432/supaqueue);
pytest-django creates and drops its own test database next to it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/supaqueue"


def ensure_venv() -> Path:
    env_dir = ROOT / os.environ.get("SUPAQUEUE_VENV", ".venv")
    python = env_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {env_dir.name} with Python {sys.version.split()[0]}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    extras = os.environ.get("SUPAQUEUE_EXTRAS", "test")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    marker = env_dir / ".supaqueue-installed"
    if not marker.exists() or marker.read_text() != digest:
        print(f"installing django-supaqueue[{extras}] (editable)", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]"], check=True)
        marker.write_text(digest)
    return python


def check_database(python: Path, url: str) -> None:
    probe = (
        "import sys, environ, psycopg\n"
        "cfg = environ.Env.db_url_config(sys.argv[1])\n"
        "kw = dict(host=cfg['HOST'] or None, port=cfg['PORT'] or None, user=cfg['USER'] or None,\n"
        "          password=cfg['PASSWORD'] or None, dbname='postgres', connect_timeout=5)\n"
        "psycopg.connect(**{k: v for k, v in kw.items() if v is not None}).close()\n"
    )
    result = subprocess.run([python, "-c", probe, url], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(
            f"PostgreSQL is not reachable at {url}: {last}\n"
            "Start a server (PostgreSQL 15 or newer) or set DATABASE_URL to one the tests "
            "may create databases on."
        )


def main() -> None:
    python = ensure_venv()
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    check_database(python, url)
    os.chdir(ROOT)
    os.execv(python, [str(python), "-m", "pytest", *sys.argv[1:]])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Set up and run the example project: ``python3 example_project/run.py [--once]`` from a clone.

Stage one needs only the standard library of any Python 3.11+: it creates the
virtual environment (``.venv``, shared with tests/run.py, or $SUPAQUEUE_VENV),
installs the project with its "example" extra (Django, psycopg and an embedded
PostgreSQL) when pyproject.toml changed, and re-executes this file with the
environment's Python. Stage two, in example_project/launch.py, does the rest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_PYTHON = (3, 11)
EXTRA = "example"


def venv_dir() -> Path:
    return ROOT / os.environ.get("SUPAQUEUE_VENV", ".venv")


def running_in(env_dir: Path) -> bool:
    return Path(sys.prefix).resolve() == env_dir.resolve()


def ensure_venv(env_dir: Path) -> Path:
    """Create the environment if needed and (re)install when pyproject.toml changed; return its Python."""
    python = env_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {env_dir.name} with Python {sys.version.split()[0]}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    marker = env_dir / f".supaqueue-{EXTRA}-installed"
    if not marker.exists() or marker.read_text() != digest:
        print(f"installing django-supaqueue[{EXTRA}] (editable) into {env_dir.name}", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{EXTRA}]"], check=True)
        marker.write_text(digest)
    return python


def main() -> None:
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"The example project needs Python {'.'.join(map(str, MIN_PYTHON))} or newer.")
    env_dir = venv_dir()
    if not running_in(env_dir):
        python = ensure_venv(env_dir)
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(ROOT))
    from example_project.launch import main as launch

    sys.exit(launch(sys.argv[1:]))


if __name__ == "__main__":
    main()

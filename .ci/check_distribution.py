#!/usr/bin/env python3
"""CI's distribution check: the package as a project gets it, never as the repository runs it.

The test suite runs an editable install inside the repository, which hides
what only a distribution can get wrong: a template or SQL file left out of
the wheel, a dependency the package imports but does not declare, metadata
PyPI refuses. So this builds the sdist and the wheel (the wheel from the
sdist, as ``python -m build`` does) out of a copy of the tree, runs
``twine check --strict``, installs the wheel with its ``binary`` extra into a
fresh virtual environment outside the repository, and, in a minimal project
written for the occasion, runs ``manage.py check``, ``migrate`` and one job
through ``runworkers --burst`` on a throwaway database, dropped afterwards.

Run with the development environment's Python (it has ``build``, ``twine``
and psycopg): ``.venv/bin/python .ci/check_distribution.py``. The server is
$DATABASE_URL's (default postgres://postgres@127.0.0.1:5432); the database is
$SUPAQUEUE_DIST_DB (default ``supaqueue_dist_<pid>``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import venv
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "django_supaqueue"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/supaqueue"
#: Where the fresh environment imports the package from, its __version__ and the installed metadata's.
INSTALLED = (
    "import importlib.metadata, django_supaqueue as p; "
    "print(p.__file__, p.__version__, importlib.metadata.version('django-supaqueue'))"
)


def run(args: Sequence[str | Path], **kwargs: object) -> str:
    """Run a step, echo its command, and fail the check with its output if it fails."""
    print("$", " ".join(str(a) for a in args), end=" ", flush=True)
    started = time.monotonic()
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    print(f"({time.monotonic() - started:.1f}s)", flush=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def copy_source(target: Path) -> Path:
    """The files git would commit, copied out: the build never writes into the shared tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def build(source: Path, outdir: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", outdir, source])
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
    return sdist, wheel


def check_wheel_contents(source: Path, wheel: Path) -> None:
    """Every file of the package in the tree is in the wheel (templates, SQL, static, py.typed)."""
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = {
        path.relative_to(source).as_posix()
        for path in (source / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    missing = sorted(expected - shipped)
    if missing:
        sys.exit(f"the wheel leaves out {len(missing)} files of the package: {missing}")
    print(f"the wheel holds all {len(expected)} files of the package", flush=True)


def install(wheel: Path, env_dir: Path) -> Path:
    """A fresh virtual environment with nothing but the wheel, its dependencies and the binary psycopg."""
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", f"{wheel}[binary]"])  # as docs/howto/install.md says
    return python


def write_project(directory: Path, database: dict[str, str]) -> None:
    """A project as the install how-to describes it, plus one task to run."""
    (directory / "distcheck").mkdir(parents=True)
    (directory / "manage.py").write_text(
        textwrap.dedent(
            """\
            import os, sys
            from django.core.management import execute_from_command_line

            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distcheck.settings")
            execute_from_command_line(sys.argv)
            """
        )
    )
    (directory / "distcheck" / "__init__.py").write_text("")
    (directory / "distcheck" / "settings.py").write_text(
        textwrap.dedent(
            f"""\
            SECRET_KEY = "distribution-check"
            USE_TZ = True
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            INSTALLED_APPS = [
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django_supaqueue",
                "distcheck",
            ]
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", **{database!r}}}}}
            """
        )
    )
    (directory / "distcheck" / "tasks.py").write_text(
        textwrap.dedent(
            """\
            from django_supaqueue import task


            @task
            def add(a, b):
                return a + b
            """
        )
    )


@contextlib.contextmanager
def throwaway_database(url: str, name: str) -> Iterator[dict[str, str]]:
    """Create ``name`` on $DATABASE_URL's server, yield Django's settings for it, drop it after."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    settings = {
        "NAME": name,
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
    }
    admin = {
        "host": settings["HOST"],
        "port": settings["PORT"],
        "user": settings["USER"],
        "password": settings["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(**admin) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield settings
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(drop)


def check_project(python: Path, project: Path) -> None:
    """check, migrate, and one job run by the installed worker: the package works from site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    where, version, installed = run([python, "-c", INSTALLED], cwd=project, env=env).split()
    if not where.startswith(str(python.parent.parent)):
        sys.exit(f"{PACKAGE} was imported from {where}, not from the fresh environment")
    if version != installed:
        sys.exit(f"{PACKAGE}.__version__ is {version} but the installed distribution is {installed}")
    manage = [python, project / "manage.py"]
    run([*manage, "check", "--fail-level", "WARNING"], cwd=project, env=env)
    run([*manage, "migrate", "-v", "0"], cwd=project, env=env)
    run([*manage, "shell", "-c", "from distcheck.tasks import add; add.enqueue(2, 3)"], cwd=project, env=env)
    output = run([*manage, "runworkers", "--burst", "-v", "2"], cwd=project, env=env)
    for expected in (
        f"django-supaqueue {version} starting",
        "(distcheck.tasks.add) attempt 1 succeeded",
        "stopped after 1 jobs",
    ):
        if expected not in output:
            sys.exit(f"runworkers -v 2 did not say {expected!r}:\n{output}")


def main() -> None:
    started = time.monotonic()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    name = os.environ.get("SUPAQUEUE_DIST_DB", f"supaqueue_dist_{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="supaqueue-dist-") as tmp:
        work = Path(tmp)
        source = copy_source(work / "source")
        _, wheel = build(source, work / "dist")
        check_wheel_contents(source, wheel)
        python = install(wheel, work / "venv")
        with throwaway_database(url, name) as database:
            write_project(work / "project", database)
            check_project(python, work / "project")
    print(f"distribution check passed in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()

"""Sphinx configuration of the documentation site (Markdown pages, read by MyST).

Build it as CI does; warnings, broken links between pages and missing anchors fail:

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The Python API page reads signatures and docstrings from the package (autodoc), which needs
# Django's app registry. No database is opened: building the docs needs no PostgreSQL server.
import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django_supaqueue",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "docs"}},
        USE_TZ=True,
    )
    django.setup()

import django_supaqueue  # noqa: E402

project = "django-supaqueue"
author = "the django-supaqueue maintainers"
copyright = "the django-supaqueue maintainers"
release = version = django_supaqueue.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings up to ### get anchors, so [text](page.md#a-heading) links are checked like page links.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"django-supaqueue {release}"
html_static_path: list[str] = []


def setup(app):  # Sphinx calls it as it calls an extension's
    # Every SQL block here is PostgreSQL's: its lexer reads dollar quoting ($$ ... $$) and PL/pgSQL.
    from pygments.lexers.sql import PostgresLexer

    app.add_lexer("sql", PostgresLexer)

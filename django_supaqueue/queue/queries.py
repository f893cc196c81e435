"""The queue's statements, read once from the .sql files beside this module.

Each file holds the statements of the module of the same name (``claims.sql``
for ``claims.py``), and only that module runs them. In a file, every statement
follows a ``-- name: <name>`` line and the comment lines that say what it does
and why, and is written whole: table names, statuses and event kinds are
literal (tests/test_queue_sql.py checks them against the models), and its only
placeholders are psycopg's parameters, ``%(name)s`` (``%(name)b`` for a
parameter sent in binary).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

from psycopg import sql

#: A statement's parameter, as psycopg writes it: ``%(name)s``.
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

_NAME = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)
_DOLLAR_QUOTE = re.compile(r"\$\w*\$")


@functools.cache
def load(filename: str) -> Mapping[str, str]:
    """The statements of one .sql file of this package, by name (see parse)."""
    return parse(resources.files(__package__).joinpath(filename).read_text(encoding="utf-8"), filename)


def parse(text: str, source: str) -> Mapping[str, str]:
    """The statements of ``text``, by name, without their comment lines or indentation.

    Without the indentation the claim fits psycopg's cache of converted
    statements (4 KiB), so a claim loop does not parse its text again on
    every round trip. A statement that creates a function keeps its layout:
    the server stores the body and shows it to whoever reads it.

    Refuses a statement without a comment saying what it does, without text,
    or with another statement's name: the files are read at import, so such a
    mistake stops the app from starting rather than one call from running.
    """
    parts = _NAME.split(text)
    statements: dict[str, str] = {}
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        lines = block.strip().splitlines()
        described = 0
        while described < len(lines) and lines[described].startswith("--"):
            described += 1
        body = "\n".join(lines[described:]).strip()
        if not _DOLLAR_QUOTE.search(body):
            body = "\n".join(line.strip() for line in body.splitlines())
        if not described or not body or name in statements:
            raise ValueError(
                f"{source}: statement {name!r} needs a name of its own, a comment line saying "
                "what it does, and its text."
            )
        statements[name] = body
    return MappingProxyType(statements)


def with_values(statement: str, values: Mapping[str, Any]) -> str:
    """``statement`` with its parameters written in as SQL literals: a statement without parameters.

    For a statement whose values are constant for the life of a connection: a
    connection prepares it once and PostgreSQL plans it once, for those very
    values. A parameter instead would let the planner prefer a custom plan and
    plan the statement again on every call.
    """
    return PLACEHOLDER.sub(lambda match: sql.Literal(values[match.group(1)]).as_string(None), statement)


def without(statement: str, clause: str) -> str:
    """``statement`` less ``clause``, which it must hold: a variant derived, not a second copy to keep."""
    if clause not in statement:
        raise ValueError(f"the statement has no {clause!r} to leave out")
    return statement.replace(clause, "")

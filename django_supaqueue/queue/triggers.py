"""Jobs from row changes, in the database: the opt-in statement-level trigger."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from psycopg import sql

from .. import conf
from ..exceptions import TriggerConfigError
from . import queries
from .enqueue import new_queue_settings
from .rows import queue_defaults
from .spec import check_max_attempts, check_priority, check_queue_name

SQL = queries.load("triggers.sql")

#: The one trigger function every job trigger calls; its arguments say what to enqueue.
ROW_TRIGGER_FUNCTION = "supaqueue_enqueue_changed_rows"
#: The events a job trigger can fire on, and the transition tables each one reads.
_TRIGGER_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS supaqueue_new_rows",
    "update": "REFERENCING OLD TABLE AS supaqueue_old_rows NEW TABLE AS supaqueue_new_rows",
    "delete": "REFERENCING OLD TABLE AS supaqueue_old_rows",
}
TRIGGER_EVENTS = tuple(_TRIGGER_REFERENCING)

# The statements that name a user's table and triggers: identifiers, which no
# parameter can carry, are composed by psycopg.sql, quoted.
_CREATE_TRIGGER = sql.SQL(
    "CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} "
    "FOR EACH STATEMENT EXECUTE FUNCTION {function}({arguments})"
)
_DROP_TRIGGER = sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}")
# The trigger's queue, created as its migration runs, in the columns the queue table
# has at that point of the migration plan (_create_queue fills in the two lists).
_CREATE_QUEUE = sql.SQL(
    "INSERT INTO supaqueue_queue ({columns}) VALUES ({values}) ON CONFLICT (name) DO NOTHING"
)


@dataclasses.dataclass(frozen=True)
class RowTrigger:
    """A job trigger as it is installed: which table, which events, what each job gets.

    ``payload`` is ``"row"`` (one keyword argument ``row``, the whole row) or a
    sequence of (keyword, column) pairs; ``changed`` limits updates to rows in
    which one of those columns changed; ``tenant_column``'s value, as text, is
    each job's tenant (NULL or '': none).
    """

    table: str
    name: str
    events: tuple[str, ...]
    task_name: str
    queue: str
    payload: str | tuple[tuple[str, str], ...]
    pk_column: str
    changed: tuple[str, ...] = ()
    priority: int | None = None
    max_attempts: int | None = None
    tenant_column: str | None = None

    def trigger_names(self) -> list[str]:
        return [f"{self.name}_{event}" for event in self.events]

    def arguments(self) -> list[str]:
        defaults = queue_defaults()
        pairs = [] if self.payload == "row" else [part for pair in self.payload for part in pair]
        return [
            self.task_name,
            check_queue_name(self.queue),
            "" if self.priority is None else str(check_priority(self.priority)),
            "" if self.max_attempts is None else str(check_max_attempts(self.max_attempts)),
            str(defaults["default_priority"]),
            str(defaults["default_max_attempts"]),
            "row" if self.payload == "row" else "keys",
            self.pk_column,
            str(len(self.changed)),
            *self.changed,
            *pairs,
            *([] if self.tenant_column is None else [self.tenant_column]),
        ]


def install_row_trigger(cursor: Any, trigger: RowTrigger, queue_columns: Collection[str]) -> None:
    """Create the trigger function (or replace it with this version) and the trigger's triggers.

    Runs on a Django cursor (a migration's schema editor); the queue the jobs go
    to is created now, with its SUPAQUEUE['QUEUES'] settings, in ``queue_columns``:
    the queue table's columns in the migration's state, which may be older than
    the models. The function writes only columns that 0001 created, and every
    column added since has a default, so it enqueues on every later schema too.
    """
    cursor.execute(SQL["tables_exist"])
    if not cursor.fetchone()[0]:
        raise TriggerConfigError(
            f"Job trigger {trigger.name!r} needs the supaqueue tables: add ('supaqueue', '0001_initial') "
            "(or a later supaqueue migration) to the dependencies of the migration that installs it."
        )
    arguments = trigger.arguments()
    _create_queue(cursor, trigger, queue_columns)
    cursor.execute(SQL["create_row_trigger_function"])
    for event, name in zip(trigger.events, trigger.trigger_names(), strict=True):
        statement = _CREATE_TRIGGER.format(
            name=sql.Identifier(name),
            event=sql.SQL(event.upper()),
            table=sql.Identifier(trigger.table),
            referencing=sql.SQL(_TRIGGER_REFERENCING[event]),
            function=sql.Identifier(ROW_TRIGGER_FUNCTION),
            arguments=sql.SQL(", ").join(sql.Literal(a) for a in arguments),
        )
        cursor.execute(statement.as_string(cursor.cursor))


def _create_queue(cursor: Any, trigger: RowTrigger, columns: Collection[str]) -> None:
    """Create the trigger's queue unless it exists, with the settings ``columns`` can hold.

    A migration that depends on supaqueue's 0001 may run before the supaqueue
    migrations that add queue columns: Django orders a fresh database's plan so
    when the app's label sorts first. A setting whose column is not there yet is
    refused, not dropped: settings apply only when the row is created, so the
    queue would never get it (a serial queue would run its jobs side by side).
    """
    configured = (conf.get("QUEUES") or {}).get(trigger.queue) or {}
    settings = new_queue_settings(trigger.queue)
    missing = [field for field in settings if field not in columns and configured.get(field) is not None]
    if missing:
        raise TriggerConfigError(
            f"SUPAQUEUE['QUEUES'][{trigger.queue!r}] sets {', '.join(missing)}, which the queue table does "
            "not have yet when this migration runs: add the latest supaqueue migration (manage.py "
            f"showmigrations supaqueue) to the dependencies of the migration that installs {trigger.name!r}."
        )
    values = {"name": trigger.queue, **{f: v for f, v in settings.items() if f in columns}}
    statement = _CREATE_QUEUE.format(
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in values),
        values=sql.SQL(", ").join(sql.Placeholder() for _ in values),
    )
    cursor.execute(statement.as_string(cursor.cursor), list(values.values()))


def drop_row_trigger(cursor: Any, trigger: RowTrigger) -> None:
    """Drop the trigger's triggers; the shared function stays for the other job triggers."""
    for name in trigger.trigger_names():
        statement = _DROP_TRIGGER.format(name=sql.Identifier(name), table=sql.Identifier(trigger.table))
        cursor.execute(statement.as_string(cursor.cursor))

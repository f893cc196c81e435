"""Jobs from row changes, in the database: the opt-in statement-level trigger."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from .. import conf
from .enqueue import new_queue_settings
from .rows import _defaults
from .spec import check_max_attempts, check_priority, check_queue_name
from .tables import JOB, PENDING, QUEUE

#: The one trigger function every job trigger calls; its arguments say what to enqueue.
ROW_TRIGGER_FUNCTION = "supaqueue_enqueue_changed_rows"
#: The events a job trigger can fire on, and the transition tables each one reads.
_TRIGGER_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS supaqueue_new_rows",
    "update": "REFERENCING OLD TABLE AS supaqueue_old_rows NEW TABLE AS supaqueue_new_rows",
    "delete": "REFERENCING OLD TABLE AS supaqueue_old_rows",
}
TRIGGER_EVENTS = tuple(_TRIGGER_REFERENCING)

# One statement-level trigger per event (transition tables allow one event per
# trigger), so an UPDATE of 10,000 rows costs one INSERT of 10,000 jobs and one
# NOTIFY. Rows become JSON with to_jsonb(); column names and options arrive as
# TG_ARGV values, so nothing here is ever built from a row's values: they are
# data from end to end. TG_ARGV: 0 task name, 1 queue, 2 priority and 3 max
# attempts ('' = the queue's, else 4 and 5, the settings when installed),
# 6 payload kind ('row' or 'keys'), 7 primary-key column, 8 n, the number of
# "changed" columns that follow (9 .. 8+n), then (payload key, column) pairs.
_CREATE_ROW_TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {ROW_TRIGGER_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $supaqueue$
DECLARE
  task_name text := TG_ARGV[0];
  queue_name text := TG_ARGV[1];
  job_priority int := NULLIF(TG_ARGV[2], '')::int;
  job_max_attempts int := NULLIF(TG_ARGV[3], '')::int;
  default_priority int := TG_ARGV[4]::int;
  default_max_attempts int := TG_ARGV[5]::int;
  whole_row boolean := TG_ARGV[6] = 'row';
  pk_column text := TG_ARGV[7];
  n_changed int := TG_ARGV[8]::int;
  changed text[] := TG_ARGV[9:8 + n_changed];
  pairs text[] := TG_ARGV[9 + n_changed:];
  changed_rows jsonb[];
BEGIN
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND n_changed = 0) THEN
    SELECT array_agg(to_jsonb(n)) INTO changed_rows FROM supaqueue_new_rows n;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT array_agg(to_jsonb(o)) INTO changed_rows FROM supaqueue_old_rows o;
  ELSE
    SELECT array_agg(n.r) INTO changed_rows
    FROM (SELECT to_jsonb(n) AS r FROM supaqueue_new_rows n) n
    JOIN (SELECT to_jsonb(o) AS r FROM supaqueue_old_rows o) o ON o.r -> pk_column = n.r -> pk_column
    WHERE EXISTS (SELECT 1 FROM unnest(changed) AS c(col) WHERE o.r -> c.col IS DISTINCT FROM n.r -> c.col);
  END IF;
  IF changed_rows IS NULL THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM {QUEUE} WHERE name = queue_name) THEN
    INSERT INTO {QUEUE} (name) VALUES (queue_name) ON CONFLICT (name) DO NOTHING;
  END IF;
  INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                     max_attempts, key, enabled, last_error, created_at)
  SELECT q.id, task_name,
         CASE WHEN whole_row THEN jsonb_build_object('row', u.r)
              ELSE (SELECT COALESCE(jsonb_object_agg(pairs[i], COALESCE(u.r -> pairs[i + 1], 'null')),
                                    '{{}}'::jsonb)
                    FROM generate_series(1, COALESCE(array_length(pairs, 1), 0), 2) AS i) END,
         '[]'::jsonb, '{PENDING}',
         COALESCE(job_priority, q.priority, default_priority), now(), 0,
         COALESCE(job_max_attempts, q.max_attempts, default_max_attempts), NULL, true, '', now()
  FROM unnest(changed_rows) WITH ORDINALITY AS u(r, n)
  JOIN {QUEUE} q ON q.name = queue_name
  ORDER BY u.n;
  RETURN NULL;
END
$supaqueue$
"""

_TABLES_EXIST = f"SELECT to_regclass('{JOB}') IS NOT NULL AND to_regclass('{QUEUE}') IS NOT NULL"

# The trigger's queue, created as its migration runs, in the columns the queue table
# has at that point of the migration plan (_create_queue fills in the two lists).
_CREATE_QUEUE = f"INSERT INTO {QUEUE} ({{columns}}) VALUES ({{values}}) ON CONFLICT (name) DO NOTHING"


@dataclasses.dataclass(frozen=True)
class RowTrigger:
    """A job trigger as it is installed: which table, which events, what each job gets.

    ``payload`` is ``"row"`` (one keyword argument ``row``, the whole row) or a
    sequence of (keyword, column) pairs; ``changed`` limits updates to rows in
    which one of those columns changed.
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

    def trigger_names(self) -> list[str]:
        return [f"{self.name}_{event}" for event in self.events]

    def arguments(self) -> list[str]:
        defaults = _defaults()
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
        ]


def install_row_trigger(cursor: Any, trigger: RowTrigger, queue_columns: Collection[str]) -> None:
    """Create the trigger function (or replace it with this version) and the trigger's triggers.

    Runs on a Django cursor (a migration's schema editor); the queue the jobs go
    to is created now, with its SUPAQUEUE['QUEUES'] settings, in ``queue_columns``:
    the queue table's columns in the migration's state, which may be older than
    the models. The function writes only columns that 0001 created, and every
    column added since has a default, so it enqueues on every later schema too.
    """
    from psycopg import sql

    cursor.execute(_TABLES_EXIST)
    if not cursor.fetchone()[0]:
        from ..exceptions import TriggerConfigError

        raise TriggerConfigError(
            f"Job trigger {trigger.name!r} needs the supaqueue tables: add ('supaqueue', '0001_initial') "
            "(or a later supaqueue migration) to the dependencies of the migration that installs it."
        )
    arguments = trigger.arguments()
    _create_queue(cursor, trigger, queue_columns)
    cursor.execute(_CREATE_ROW_TRIGGER_FUNCTION)
    for event, name in zip(trigger.events, trigger.trigger_names(), strict=True):
        statement = sql.SQL(
            "CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {function}({arguments})"
        ).format(
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
    from psycopg import sql

    from ..exceptions import TriggerConfigError

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
    statement = sql.SQL(_CREATE_QUEUE).format(
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in values),
        values=sql.SQL(", ").join(sql.Placeholder() for _ in values),
    )
    cursor.execute(statement.as_string(cursor.cursor), list(values.values()))


def drop_row_trigger(cursor: Any, trigger: RowTrigger) -> None:
    """Drop the trigger's triggers; the shared function stays for the other job triggers."""
    from psycopg import sql

    for name in trigger.trigger_names():
        statement = sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
            name=sql.Identifier(name), table=sql.Identifier(trigger.table)
        )
        cursor.execute(statement.as_string(cursor.cursor))

"""The demo's failures on purpose, marked as such in the workers' log lines.

The inventory sync fails twice before it succeeds, to show retries and back-off;
printed as a plain warning, a first-time reader takes it for something broken.
The console handler of the example's settings runs this filter, which prefixes
such lines with "expected failure (<why>): " and lowers them to INFO. It reads the
``task`` and ``outcome`` fields every attempt's line carries, and imports no model,
since logging is configured before the app registry is ready.
"""

from __future__ import annotations

import logging

#: Tasks of the demo that fail on purpose, and what their failures show.
EXPECTED_FAILURES = {
    "example_project.example_app.tasks.sync_inventory": "demonstrates retries",
}


class MarkExpectedFailures(logging.Filter):
    """Rewrites a failed attempt of an ``EXPECTED_FAILURES`` task that will be retried; keeps every line.

    A final failure is left as it is: the demo never means a job to fail for good.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        why = EXPECTED_FAILURES.get(getattr(record, "task", None))
        if why and getattr(record, "outcome", None) == "retry":
            record.msg, record.args = f"expected failure ({why}): {record.getMessage()}", ()
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True

"""What a claim loop's next round trip writes: finished attempts, and the room their ends made.

Outcomes wait here from the end of their attempt until a round trip records
them: at once when the loop's slots need refilling, or held back for up to
OUTCOME_WAIT while every slot has work, so that jobs of a few milliseconds are
written many to a transaction rather than one each. A round trip the database
refuses leaves them here, their leases still renewed, for the next.
"""

from __future__ import annotations

import math
import time

from ..queue import ClaimedJob, Failure, Success
from .executor import Outcome

#: Seconds a loop whose slots all have work may hold an outcome back, to write it with the
#: ones that follow (and claim their replacements) in one round trip rather than one each.
OUTCOME_WAIT = 0.02


class Unwritten:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.jobs: dict[tuple[int, int], ClaimedJob] = {}  # for the life-cycle signals
        self.freed_capped: set[str] = set()  # capped queues with room again: wake their workers
        self.freed_groups: set[str] = set()  # serial groups whose job ended: wake their queues' workers
        self._since = math.inf  # time.monotonic() of the oldest outcome here

    def __len__(self) -> int:
        return len(self.outcomes)

    def record(self, job: ClaimedJob, outcome: Outcome) -> None:
        if not self.outcomes:
            self._since = time.monotonic()
        self.outcomes.append(outcome)
        self.jobs[(job.id, job.attempt)] = job

    def holding(self, *, busy: bool, batch: int) -> bool:
        """Wait for more: every slot has work (``busy``), fewer than ``batch`` are here, none is old.

        Never while an end freed a cap, a serial queue or a group: the next job
        there may start only once this write has counted the end.
        """
        return (
            busy
            and not (self.freed_capped or self.freed_groups)
            and 0 < len(self.outcomes) < batch
            and time.monotonic() < self.deadline
        )

    @property
    def deadline(self) -> float:
        """When the oldest outcome here must be written (inf: none is here)."""
        return self._since + OUTCOME_WAIT

    def keys(self) -> list[tuple[int, int]]:
        """The (job id, attempt) of each outcome: their leases are held until they are written."""
        return [(o.job_id, o.attempt) for o in self.outcomes]

    def split(self) -> tuple[list[Success], list[Failure]]:
        return (
            [o for o in self.outcomes if isinstance(o, Success)],
            [o for o in self.outcomes if isinstance(o, Failure)],
        )

    def written(self) -> dict[tuple[int, int], ClaimedJob]:
        """Forget what a round trip has recorded; returns the jobs whose outcomes it wrote."""
        jobs, self.jobs = self.jobs, {}
        self.outcomes = []
        self._since = math.inf
        self.freed_capped = set()
        self.freed_groups = set()
        return jobs

"""Names the database and the code must agree on, in a module that imports nothing of the app.

Migrations, models, the queue's SQL and the workers read them from here, so
that a channel or a status is spelled in exactly one place.
"""

from __future__ import annotations

#: The channel the job insert trigger notifies and workers LISTEN on ("<queue> <due epoch or 0>").
CHANNEL = "supaqueue"
#: Cancellations of running attempts are announced here as "<job id> <attempt>".
CANCEL_CHANNEL = "supaqueue_cancel"

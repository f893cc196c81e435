"""django-supaqueue: a job queue on the PostgreSQL database a Django project already has.

The public API is small::

    from django_supaqueue import task, enqueue, enqueue_many, enqueue_http, enqueue_http_many
    from django_supaqueue import cancel, reschedule
    from django_supaqueue import Pipeline, dependency_results

Names resolve lazily so that importing this package (as INSTALLED_APPS does,
before models are ready) never touches the app registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "task",
    "enqueue",
    "enqueue_many",
    "enqueue_http",
    "enqueue_http_many",
    "cancel",
    "reschedule",
    "Pipeline",
    "dependency_results",
    "__version__",
]

if TYPE_CHECKING:
    from .api import cancel, enqueue, enqueue_http, enqueue_http_many, enqueue_many, reschedule
    from .pipelines import Pipeline, dependency_results
    from .tasks import task


def __getattr__(name: str) -> Any:
    if name == "task":
        from .tasks import task

        return task
    if name in ("Pipeline", "dependency_results"):
        from . import pipelines

        return getattr(pipelines, name)
    if name in ("enqueue", "enqueue_many", "enqueue_http", "enqueue_http_many", "cancel", "reschedule"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'django_supaqueue' has no attribute {name!r}")

"""Admin screens for queues, workers and jobs.

Only queues are edited here. Jobs, events, workers and leases are read-only:
a job's state changes only through the queue's own statements (queue.py), so
an admin edit can never break a lease or a status rule.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import CurrentJob, Job, JobEvent, Queue, Worker


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "paused",
        "concurrency_limit",
        "execution_mode",
        "max_attempts",
        "priority",
        "timeout",
    ]
    list_editable = ["paused", "concurrency_limit"]
    search_fields = ["name"]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = ["name", "host", "pid", "concurrency", "started_at", "last_heartbeat_at"]


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    fields = [
        "at",
        "kind",
        "attempt",
        "worker_name",
        "duration",
        "error_class",
        "error_message",
        "retry_at",
        "traceback",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "task_name",
        "queue",
        "status",
        "attempts",
        "max_attempts",
        "priority",
        "run_at",
        "created_at",
    ]
    list_filter = ["status", "queue"]
    search_fields = ["=id", "task_name", "=key"]
    list_select_related = ["queue"]
    show_full_result_count = False
    inlines = [JobEventInline]


@admin.register(CurrentJob)
class CurrentJobAdmin(ReadOnlyAdmin):
    list_display = ["job", "worker", "attempt", "started_at", "lease_expires_at"]

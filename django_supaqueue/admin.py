"""Admin screens for queues, workers and jobs (read-mostly: state changes go through queue.py)."""

from __future__ import annotations

from django.contrib import admin

from .models import CurrentJob, Job, JobEvent, Queue, Worker


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ["name", "paused", "concurrency_limit", "max_attempts", "priority", "timeout"]
    list_editable = ["paused", "concurrency_limit"]
    search_fields = ["name"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "pid", "concurrency", "started_at", "last_heartbeat_at"]
    readonly_fields = [f.name for f in Worker._meta.fields]


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

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
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
    readonly_fields = ["attempts", "result", "last_error", "created_at", "started_at", "finished_at"]
    inlines = [JobEventInline]


@admin.register(CurrentJob)
class CurrentJobAdmin(admin.ModelAdmin):
    list_display = ["job", "worker", "attempt", "started_at", "lease_expires_at"]
    readonly_fields = ["job", "worker", "attempt", "started_at", "lease_expires_at"]

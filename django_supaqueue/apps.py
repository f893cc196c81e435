"""App configuration: find every app's tasks.py, connect declared model-change jobs, register checks,
and give the models the schedule target check they may not import."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class SupaqueueConfig(AppConfig):
    name = "django_supaqueue"
    label = "supaqueue"
    verbose_name = "Supaqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the checks)
            scheduling,
        )
        from .change_jobs import connect_declared_models
        from .models import schedule

        schedule.schedule_target_check = scheduling.check_target
        autodiscover_modules("tasks")
        connect_declared_models()

"""App configuration: find every app's tasks.py and register the system checks."""

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class SupaqueueConfig(AppConfig):
    name = "django_supaqueue"
    label = "supaqueue"
    verbose_name = "Supaqueue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)

        autodiscover_modules("tasks")

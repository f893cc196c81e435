"""The example's own data: orders that enqueue their confirmation, and a flaky warehouse link."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from django_supaqueue import enqueue

#: Enqueued by name: tasks.py imports this module, so importing the task here would be circular.
CONFIRM_ORDER_TASK = "example_project.example_app.tasks.confirm_order"


class Order(models.Model):
    """A customer order. Saving a new one enqueues its confirmation in the same transaction."""

    class Status(models.TextChoices):
        NEW = "new", "New"
        CONFIRMED = "confirmed", "Confirmed"

    number = models.CharField(max_length=32, unique=True)
    email = models.EmailField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Insert the order and its confirmation job atomically: both commit or neither does.

        A ``post_save`` receiver would run after Django's own save has committed
        (outside any transaction the caller did not open), so a crash between
        the two statements could leave an order nobody ever confirms.
        """
        creating = self._state.adding
        with transaction.atomic():
            super().save(*args, **kwargs)
            if creating:
                enqueue(CONFIRM_ORDER_TASK, {"order_id": self.pk}, key=self.confirmation_key)

    @property
    def confirmation_key(self) -> str:
        """Key of this order's confirmation job: finds the job again, and only one can be pending."""
        return f"order:{self.number}:confirm"


class WarehouseSync(models.Model):
    """Counts calls to a pretend warehouse API that is down for the first few calls of a sync."""

    name = models.CharField(max_length=50, unique=True)
    calls = models.PositiveIntegerField(default=0)
    synced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

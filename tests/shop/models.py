"""The docs' shop (docs/howto/model-changes.md): a trigger enqueues a job when an order's status changes."""

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=20)
    status = models.CharField(max_length=20, default="new")

    def __str__(self) -> str:
        return self.number

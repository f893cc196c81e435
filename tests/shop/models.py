"""The README's shop: an order whose status changes enqueue a job through a trigger."""

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=20)
    status = models.CharField(max_length=20, default="new")

    def __str__(self) -> str:
        return self.number

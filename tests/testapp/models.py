"""A side-effect table: each row is one run of a task body, so tests can count them."""

from django.db import models


class Execution(models.Model):
    label = models.CharField(max_length=50)
    n = models.IntegerField()
    pid = models.IntegerField()
    started = models.FloatField()
    ended = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["label", "n"])]

    def __str__(self) -> str:
        return f"{self.label} {self.n}"

"""A side-effect table (each row is one run of a task body) and models whose changes enqueue jobs."""

from django.db import models

from django_supaqueue.change_jobs import EnqueueOnChange, on_delete, on_save


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


class Ticket(models.Model):
    """A model the signal tests connect their own jobs to (and disconnect them from)."""

    title = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="open")
    amount = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    notes = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.title


class Article(EnqueueOnChange, models.Model):
    """Declares its jobs with the mixin: saved in a transaction, indexed when its title changes."""

    title = models.CharField(max_length=200)
    published = models.BooleanField(default=False)

    jobs_on_change = [
        on_save("tests.testapp.tasks.index_article", payload="id", changed=["title", "published"]),
        on_delete("tests.testapp.tasks.forget_article", payload="row"),
    ]

    def __str__(self) -> str:
        return self.title


class Product(models.Model):
    """Has job triggers (migration 0002): every insert, price change and delete enqueues, in SQL."""

    sku = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.sku

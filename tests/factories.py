"""factory-boy factories for every model."""

from datetime import timedelta

import factory
from django.utils import timezone

from django_supaqueue.models import (
    CurrentJob,
    Job,
    JobDependency,
    JobEvent,
    Queue,
    Schedule,
    ScheduleTick,
    Worker,
)
from example_project.example_app.models import Order
from tests.testapp.models import Article, Product, Ticket


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"queue-{n}")


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    name = factory.Sequence(lambda n: f"host:{1000 + n}:test")
    host = "host"
    pid = factory.Sequence(lambda n: 1000 + n)
    queues = factory.LazyFunction(list)
    concurrency = 4


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    queue = factory.SubFactory(QueueFactory, name="default")
    task_name = "tests.testapp.tasks.noop"
    payload = factory.LazyFunction(dict)
    args = factory.LazyFunction(list)
    run_at = factory.LazyFunction(timezone.now)
    max_attempts = 5


class CurrentJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CurrentJob

    job = factory.SubFactory(JobFactory, status=Job.Status.IN_PROGRESS, attempts=1)
    worker = factory.SubFactory(WorkerFactory)
    attempt = 1
    lease_expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(seconds=30))


class JobEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobEvent

    job = factory.SubFactory(JobFactory)
    kind = JobEvent.Kind.STARTED
    attempt = 1
    worker_name = "host:1:test"


class JobDependencyFactory(factory.django.DjangoModelFactory):
    """An edge of the job graph: ``job`` waits for ``depends_on``."""

    class Meta:
        model = JobDependency

    job = factory.SubFactory(JobFactory, status=Job.Status.WAITING)
    depends_on = factory.SubFactory(JobFactory)


class ScheduleFactory(factory.django.DjangoModelFactory):
    """A schedule of the no-op task, hourly in UTC unless it is given a schedule_info rule."""

    class Meta:
        model = Schedule

    name = factory.Sequence(lambda n: f"schedule-{n}")
    task_name = "tests.testapp.tasks.noop"
    cron = factory.LazyAttribute(lambda s: "" if s.schedule_info is not None else "0 * * * *")
    schedule_info = None
    timezone = "UTC"


class ScheduleTickFactory(factory.django.DjangoModelFactory):
    """A tick a schedule fired (or that a worker claimed) at ``tick_at``."""

    class Meta:
        model = ScheduleTick

    schedule = factory.SubFactory(ScheduleFactory)
    tick_at = factory.LazyFunction(timezone.now)


class OrderFactory(factory.django.DjangoModelFactory):
    """An example-project order; creating one enqueues its confirmation."""

    class Meta:
        model = Order

    number = factory.Sequence(lambda n: f"T-{n}")
    email = factory.LazyAttribute(lambda o: f"{o.number.lower()}@example.com")


class TicketFactory(factory.django.DjangoModelFactory):
    """A model with no jobs of its own: tests connect theirs."""

    class Meta:
        model = Ticket

    title = factory.Sequence(lambda n: f"Ticket {n}")
    amount = "12.50"


class ArticleFactory(factory.django.DjangoModelFactory):
    """Declares its jobs with EnqueueOnChange: creating one enqueues its indexing."""

    class Meta:
        model = Article

    title = factory.Sequence(lambda n: f"Article {n}")


class ProductFactory(factory.django.DjangoModelFactory):
    """Has job triggers: inserting one enqueues product_added in SQL, signals or not."""

    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU-{n}")
    name = factory.Sequence(lambda n: f"Product {n}")
    price = "9.99"

"""Job triggers: PostgreSQL triggers that enqueue for QuerySet.update(), bulk_create() and raw SQL.

The test app's migration 0002 installs three on testapp_product, as a user
would: product_added (insert, payload "id"), product_repriced (update of price,
payload ["sku", "price"]) and product_removed (delete, payload "row", queue
"catalogue").
"""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.writer import MigrationWriter
from django.db.models import F

from django_supaqueue.change_jobs import enqueue_on_delete, enqueue_on_save
from django_supaqueue.exceptions import TriggerConfigError
from django_supaqueue.models import Job, Queue
from django_supaqueue.operations import InstallJobTrigger, RemoveJobTrigger
from django_supaqueue.testing import assert_enqueued, assert_not_enqueued
from tests.factories import ProductFactory, TicketFactory
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution, Product

pytestmark = pytest.mark.django_db

INJECTION = "Bob's \"best\" '); DROP TABLE testapp_product; -- $$ %s \\x"


def sql(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def triggers_on(table):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1",
            [table],
        )
        return [r[0] for r in cursor.fetchall()]


def run_operation(operation, app_label="testapp", backwards=False):
    state = MigrationLoader(connection).project_state()
    with connection.schema_editor() as editor:
        if backwards:
            operation.database_backwards(app_label, editor, state, state)
        else:
            operation.database_forwards(app_label, editor, state, state)


def test_bulk_create_enqueues_one_job_per_row():
    products = Product.objects.bulk_create([Product(sku=f"B-{i}", name="bulk", price=1) for i in range(3)])
    jobs = assert_enqueued(tasks.product_added, count=3)
    assert sorted(j.payload["id"] for j in jobs) == sorted(p.pk for p in products)


def test_queryset_update_enqueues_only_rows_whose_watched_column_changed():
    cheap, dear = ProductFactory(sku="CHEAP", price=Decimal("1.00")), ProductFactory(sku="DEAR", price=10)
    Product.objects.update(stock=F("stock") + 5)  # price untouched: no job
    assert_not_enqueued(tasks.product_repriced)
    Product.objects.filter(pk=cheap.pk).update(price=Decimal("1.50"))
    Product.objects.filter(pk=dear.pk).update(price=F("price"))  # written, not changed
    assert_enqueued(tasks.product_repriced, {"sku": "CHEAP", "price": 1.5}, count=1)


def test_raw_sql_inserts_updates_and_deletes_enqueue():
    sql("INSERT INTO testapp_product (sku, name, price, stock) VALUES ('RAW', 'raw', 2.5, 1)")
    product = Product.objects.get(sku="RAW")
    sql("UPDATE testapp_product SET price = 3 WHERE sku = 'RAW'")
    sql("DELETE FROM testapp_product WHERE sku = 'RAW'")
    assert_enqueued(tasks.product_added, {"id": product.pk}, count=1)
    assert_enqueued(tasks.product_repriced, {"sku": "RAW", "price": 3}, count=1)
    (removed,) = assert_enqueued(
        tasks.product_removed,
        {"row": {"id": product.pk, "sku": "RAW", "name": "raw", "price": 3, "stock": 1}},
        queue="catalogue",
    )
    assert removed.status == Job.Status.PENDING


def test_row_values_are_data_never_sql():
    sql(
        "INSERT INTO testapp_product (sku, name, price, stock) VALUES (%s, %s, 1, 0)",
        [INJECTION, INJECTION],
    )
    sql("UPDATE testapp_product SET price = 2")
    sql("DELETE FROM testapp_product")
    assert_enqueued(tasks.product_repriced, {"sku": INJECTION, "price": 2}, count=1)
    (removed,) = assert_enqueued(tasks.product_removed)
    assert removed.payload["row"]["name"] == removed.payload["row"]["sku"] == INJECTION
    assert "testapp_product" in connection.introspection.table_names()
    assert Product.objects.count() == 0


def test_a_statement_that_changes_no_rows_enqueues_nothing():
    Product.objects.filter(pk=-1).update(price=1)
    Product.objects.filter(pk=-1).delete()
    Product.objects.bulk_create([])
    assert not Job.objects.exists()


def test_the_queue_is_created_when_it_is_missing():
    product = ProductFactory()
    Queue.objects.filter(name="catalogue").delete()
    product.delete()
    assert_enqueued(tasks.product_removed, queue="catalogue", count=1)
    assert Queue.objects.get(name="catalogue").paused is False


def test_signals_and_triggers_give_the_same_payload_shapes():
    on_create = enqueue_on_save(Product, tasks.product_added, on="create")
    on_price = enqueue_on_save(
        Product, tasks.product_repriced, on="update", payload=["sku", "price"], changed=["price"]
    )
    on_delete = enqueue_on_delete(Product, tasks.product_removed, payload="row")
    try:
        product = ProductFactory(sku="SAME", name="same", price=Decimal("4.00"))
        product.price = Decimal("5.00")
        product.save()
        product.delete()
    finally:
        for registration in (on_create, on_price, on_delete):
            registration.disconnect()
    by_signal, by_trigger = assert_enqueued(tasks.product_added, count=2)
    assert by_signal.payload == by_trigger.payload
    repriced = assert_enqueued(tasks.product_repriced, count=2)
    removed = assert_enqueued(tasks.product_removed, count=2)
    signal_price, trigger_price = (j.payload for j in repriced)
    assert signal_price.keys() == trigger_price.keys() and signal_price["sku"] == trigger_price["sku"]
    # Decimals: Django's encoder writes a string, to_jsonb a number (see docs/howto/model-changes.md).
    assert Decimal(signal_price["price"]) == Decimal(str(trigger_price["price"])) == Decimal("5.00")
    signal_row, trigger_row = (j.payload["row"] for j in removed)
    assert signal_row.keys() == trigger_row.keys() == {"id", "sku", "name", "price", "stock"}
    assert {k: v for k, v in signal_row.items() if k != "price"} == {
        k: v for k, v in trigger_row.items() if k != "price"
    }


def test_queue_priority_and_attempts_come_from_the_task_when_the_migration_runs():
    operation = InstallJobTrigger(
        model_name="ticket", task="tests.testapp.tasks.send_email", payload=["title"]
    )
    run_operation(operation)
    TicketFactory(title="to@example.com")
    (job,) = assert_enqueued(tasks.send_email, {"title": "to@example.com"}, queue="emails")
    assert (job.priority, job.max_attempts) == (3, 7)


def test_a_task_unknown_when_the_migration_runs_still_installs_on_the_default_queue():
    run_operation(InstallJobTrigger(model_name="ticket", task="gone.tasks.removed_long_ago", on=["insert"]))
    TicketFactory()
    (job,) = Job.objects.filter(task_name="gone.tasks.removed_long_ago")
    assert job.queue.name == "default" and job.payload == {"id": job.payload["id"]}


def test_the_operation_reverses_and_remove_job_trigger_undoes_it():
    operation = InstallJobTrigger(
        model_name="product",
        task="tests.testapp.tasks.product_added",
        payload="id",
        on=["insert"],
        name="product_added",
    )
    run_operation(operation, backwards=True)
    assert "product_added_insert" not in triggers_on("testapp_product")
    ProductFactory()
    assert_not_enqueued(tasks.product_added)
    remove = RemoveJobTrigger(**operation._constructor_args[1])
    run_operation(remove, backwards=True)  # un-removing installs it again
    assert "product_added_insert" in triggers_on("testapp_product")
    ProductFactory()
    assert_enqueued(tasks.product_added, count=1)


def test_the_operation_is_written_into_migrations_like_djangos_own():
    operation = InstallJobTrigger(
        model_name="product", task="shop.tasks.sync", payload=["sku"], on=["update"]
    )
    text, imports = MigrationWriter.serialize(operation)
    assert "import django_supaqueue.operations" in imports
    assert text.startswith("django_supaqueue.operations.InstallJobTrigger(")
    assert operation.describe() == f"Install job trigger {operation.name} (shop.tasks.sync) on product"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on": ["truncate"]}, "on must list distinct events"),
        ({"on": ["insert"], "changed": ["price"]}, 'changed= only applies to "update"'),
        ({"payload": 3}, 'payload must be "id", "row" or a list'),
        ({"name": "x" * 57}, "name must be 1 to 56 characters"),
    ],
)
def test_an_operation_that_cannot_work_is_refused_when_written(options, message):
    with pytest.raises(TriggerConfigError, match=message):
        InstallJobTrigger(model_name="product", task="shop.tasks.sync", **options)


def test_an_unknown_field_is_refused_when_the_migration_runs():
    operation = InstallJobTrigger(model_name="product", task="shop.tasks.sync", payload=["colour"])
    with pytest.raises(TriggerConfigError, match="has no field 'colour'"):
        run_operation(operation)


def test_installing_without_the_queue_tables_says_which_dependency_is_missing():
    sql("ALTER TABLE supaqueue_job RENAME TO supaqueue_job_elsewhere")  # undone with the test's transaction
    operation = InstallJobTrigger(model_name="product", task="shop.tasks.sync", name="needs_tables")
    with pytest.raises(TriggerConfigError, match=r"add \('supaqueue', '0001_initial'\)"):
        run_operation(operation)


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_jobs_the_trigger_enqueued(supaqueue):
    sql("INSERT INTO testapp_product (sku, name, price, stock) VALUES ('W-1', 'w', 1, 0), ('W-2', 'w', 1, 0)")
    supaqueue.run_worker()
    ids = sorted(Product.objects.values_list("id", flat=True))
    assert sorted(Execution.objects.filter(label="product_added").values_list("n", flat=True)) == ids
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.SUCCESSFUL}


def test_a_running_worker_is_woken_by_a_trigger_insert(worker_processes):
    worker_processes.start("--poll-interval", "120")
    worker_processes.wait_ready(1)
    product = Product.objects.bulk_create([Product(sku="WAKE", name="w", price=1)])[0]
    wait_for(lambda: Execution.objects.filter(label="product_added", n=product.pk).exists(), timeout=60)

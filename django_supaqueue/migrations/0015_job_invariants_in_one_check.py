"""The job row's six CHECK constraints become one call to a PL/pgSQL function.

PostgreSQL keeps a CHECK constraint as a serialized expression tree and, for
every INSERT or UPDATE statement, reads it back and plans it again. The six
checks (three from PositiveIntegerField, priority range, max_attempts, status)
came to about 150k of the 660k instructions a single enqueue costs the server;
the one function call costs about 35k and checks the same things. PL/pgSQL, not
SQL, so that the planner does not inline the body and plan it on every statement.
"""

import django.core.validators
from django.db import migrations, models

FUNCTION = """
CREATE OR REPLACE FUNCTION supaqueue_job_is_valid(
  status text, priority int, max_attempts int, attempts int, waiting_for int
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN status IN ('waiting', 'pending', 'in_progress', 'successful', 'failed', 'cancelled')
     AND priority BETWEEN -100 AND 100
     AND max_attempts >= 1
     AND attempts >= 0
     AND waiting_for >= 0;
END
$$;
"""

DROP_FUNCTION = "DROP FUNCTION IF EXISTS supaqueue_job_is_valid(text, int, int, int, int);"


class Migration(migrations.Migration):
    dependencies = [("supaqueue", "0014_lease_and_event_keys_by_trigger")]

    operations = [
        migrations.RunSQL(FUNCTION, DROP_FUNCTION),
        migrations.RemoveConstraint(model_name="job", name="supaqueue_job_priority_range"),
        migrations.RemoveConstraint(model_name="job", name="supaqueue_job_max_attempts"),
        migrations.RemoveConstraint(model_name="job", name="supaqueue_job_status_valid"),
        migrations.AlterField(
            model_name="job",
            name="attempts",
            field=models.IntegerField(
                db_default=0, default=0, validators=[django.core.validators.MinValueValidator(0)]
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="max_attempts",
            field=models.IntegerField(
                db_default=5, default=5, validators=[django.core.validators.MinValueValidator(1)]
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="waiting_for",
            field=models.IntegerField(
                db_default=0,
                default=0,
                editable=False,
                help_text="Dependencies that have not finished yet.",
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                condition=models.Func(
                    models.F("status"),
                    models.F("priority"),
                    models.F("max_attempts"),
                    models.F("attempts"),
                    models.F("waiting_for"),
                    function="supaqueue_job_is_valid",
                    output_field=models.BooleanField(),
                ),
                name="supaqueue_job_valid",
                violation_error_message=(
                    "A job needs a known status, a priority in -100..100, max_attempts of at least 1, "
                    "and attempts and waiting_for of at least 0."
                ),
            ),
        ),
    ]

"""Drop the attempt history's index on ``job_id`` alone: ``asyncjobs_attempt_job_idx`` (job,
started_at) serves every lookup by job, and every claim wrote an entry to both.

Hand-written: Django's AlterField(db_index=False) drops the foreign key constraint and adds it
again, which validates every attempt row under a lock that stops claims for as long; dropping
the index alone takes a moment and keeps the constraint as it is.
"""

import django.db.models.deletion
from django.db import migrations, models


def _job_id_indexes(schema_editor):
    """Return the names of the indexes on exactly (job_id) of the attempt table."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "asyncjobs_attempt")
    return [
        name
        for name, details in constraints.items()
        if details["index"]
        and not details["unique"]
        and not details["primary_key"]
        and details["columns"] == ["job_id"]
    ]


def drop_job_id_index(apps, schema_editor):
    for name in _job_id_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_job_id_index(apps, schema_editor):
    if not _job_id_indexes(schema_editor):
        schema_editor.execute(
            "CREATE INDEX asyncjobs_attempt_job_id_c1a3fd43 ON asyncjobs_attempt (job_id)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("django_asyncjobs", "0020_trace_context"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="jobattempt",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_history",
                        to="django_asyncjobs.job",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_job_id_index, create_job_id_index),
            ],
        ),
    ]

"""Store the at-most-once policy and refused deliveries on the row; keep run_at readable.

Hand-written: the column defaults are also set in the database, so that rows inserted by raw SQL
and by ``asyncjobs_enqueue()`` get them; rows whose ``run_at`` Python cannot read back are moved
to the nearest readable time before the CHECK constraint is added.
"""

import datetime

import django
from django.db import migrations, models

import django_asyncjobs.fields

EARLIEST = datetime.datetime(1, 1, 2, tzinfo=datetime.timezone.utc)
LATEST = datetime.datetime(9999, 12, 30, tzinfo=datetime.timezone.utc)
BOUNDS = "'0001-01-02 00:00:00+00'::timestamptz", "'9999-12-30 00:00:00+00'::timestamptz"

DEFAULTS = """
    ALTER TABLE asyncjobs_job
        ALTER COLUMN at_most_once SET DEFAULT false,
        ALTER COLUMN refused_deliveries SET DEFAULT 0,
        ALTER COLUMN task_backend SET DEFAULT '';
"""
REPAIR = f"""
    UPDATE asyncjobs_job SET run_at = LEAST(GREATEST(run_at, {BOUNDS[0]}), {BOUNDS[1]})
    WHERE run_at < {BOUNDS[0]} OR run_at > {BOUNDS[1]};
"""


def mark_at_most_once(apps, schema_editor):
    """Copy the policy of at-most-once jobs this process knows onto their unfinished rows."""
    from django_asyncjobs.registry import registry

    names = [definition.name for definition in registry if definition.at_most_once]
    if names:
        Job = apps.get_model("django_asyncjobs", "Job")
        Job.objects.using(schema_editor.connection.alias).filter(
            name__in=names, status__in=["scheduled", "queued", "running"]
        ).update(at_most_once=True)


CHECK = models.Q(run_at__gte=EARLIEST, run_at__lte=LATEST)


class Migration(migrations.Migration):
    dependencies = [
        ("django_asyncjobs", "0012_attempt_traceback"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="at_most_once",
            field=models.BooleanField(
                default=False,
                help_text="Never run again after an attempt that may have partly run.",
                verbose_name="at most once",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="refused_deliveries",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "Times a worker received the job but could not run it "
                    "(name not registered)."
                ),
                verbose_name="refused deliveries",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="task_backend",
            field=models.CharField(
                blank=True,
                default="",
                help_text="Alias of the Django Tasks backend that enqueued it (empty for @job).",
                max_length=100,
                verbose_name="task backend",
            ),
        ),
        migrations.RunSQL(DEFAULTS, reverse_sql=migrations.RunSQL.noop),
        migrations.RunPython(mark_at_most_once, reverse_code=migrations.RunPython.noop),
        migrations.AlterField(
            model_name="job",
            name="run_at",
            field=django_asyncjobs.fields.BoundedDateTimeField(
                help_text="Not sent to a worker before this.", verbose_name="run at"
            ),
        ),
        migrations.RunSQL(REPAIR, reverse_sql=migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.CheckConstraint(
                name="asyncjobs_run_at_in_range",
                **{"condition" if django.VERSION >= (5, 1) else "check": CHECK},
            ),
        ),
    ]

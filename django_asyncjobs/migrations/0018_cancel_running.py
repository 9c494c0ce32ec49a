"""Cancel running jobs: the operator's request is stored on the row, for its worker to act on.

Hand-written: ``cancel_requested_by``'s default is also set in the database, so that rows
inserted by raw SQL, by ``asyncjobs_enqueue()`` and by the INSERT of ``delay()`` (which names
its columns) get it. The attempt history gains the outcome ``cancelled``.
"""

from django.db import migrations, models

DEFAULTS = "ALTER TABLE asyncjobs_job ALTER COLUMN cancel_requested_by SET DEFAULT '';"


class Migration(migrations.Migration):
    dependencies = [
        ("django_asyncjobs", "0017_attempt_numbering"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="cancel_requested_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When an operator asked to cancel the job.",
                null=True,
                verbose_name="cancel requested at",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="cancel_requested_by",
            field=models.CharField(
                blank=True,
                default="",
                help_text=(
                    "Who asked to cancel the job: an admin user, an API user, or a CLI operator."
                ),
                max_length=255,
                verbose_name="cancel requested by",
            ),
        ),
        migrations.RunSQL(DEFAULTS, reverse_sql=migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="jobattempt",
            name="outcome",
            field=models.CharField(
                blank=True,
                choices=[
                    ("succeeded", "succeeded"),
                    ("failed", "failed"),
                    ("timed out", "timed out"),
                    ("lost", "worker lost"),
                    ("interrupted", "interrupted"),
                    ("cancelled", "cancelled"),
                ],
                default="",
                max_length=16,
                verbose_name="outcome",
            ),
        ),
    ]

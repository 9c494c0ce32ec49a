"""Number a job's attempts on across operator retries; keep an operator's note out of ``error``.

Hand-written around the generated field operations:

- the new columns' defaults are also set in the database, so that rows inserted by raw SQL and
  by ``asyncjobs_enqueue()`` get them (as in 0013);
- the attempt history is renumbered where an operator's retry (which set ``attempts`` back to 0)
  or a free interruption (which gave its attempt back) made numbers repeat: each job's attempts
  are numbered on from its first recorded one, in the order they started;
- ``total_attempts`` is the number of each job's latest attempt (at least ``attempts``: jobs that
  ran before the history existed have fewer rows than attempts);
- the note "mark as succeeded" wrote into ``error`` moves to ``note``: a succeeded job's error is
  otherwise always empty, so any text there is such a note.

Each UPDATE touches only the rows it changes, in one statement each.
"""

from django.db import migrations, models

DEFAULTS = """
    ALTER TABLE asyncjobs_job
        ALTER COLUMN total_attempts SET DEFAULT 0,
        ALTER COLUMN note SET DEFAULT '';
"""
RENUMBER = """
    UPDATE asyncjobs_attempt AS a SET number = n.number
    FROM (
        SELECT id, first_value(number) OVER w - 1 + row_number() OVER w AS number
        FROM asyncjobs_attempt
        WINDOW w AS (PARTITION BY job_id ORDER BY started_at, id)
    ) AS n
    WHERE a.id = n.id AND a.number <> n.number;
"""
TOTALS = """
    UPDATE asyncjobs_job AS j SET total_attempts = GREATEST(j.attempts, h.latest)
    FROM (SELECT job_id, max(number) AS latest FROM asyncjobs_attempt GROUP BY job_id) AS h
    WHERE j.id = h.job_id;
    UPDATE asyncjobs_job SET total_attempts = attempts WHERE total_attempts < attempts;
"""
NOTES = """
    UPDATE asyncjobs_job SET note = error, error = ''
    WHERE status = 'succeeded' AND error <> '';
"""


class Migration(migrations.Migration):
    dependencies = [
        ("django_asyncjobs", "0016_process"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="note",
            field=models.TextField(
                blank=True,
                default="",
                help_text=(
                    "What an operator said when they settled the job by hand (mark as succeeded)."
                ),
                verbose_name="note",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="total_attempts",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "Times the job started, over its whole life; the number of its latest attempt."
                ),
                verbose_name="total attempts",
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="attempts",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "Attempts counted against the retry limit: an operator's retry starts again "
                    "from 0, and a free interruption gives its attempt back."
                ),
                verbose_name="attempts",
            ),
        ),
        migrations.RunSQL(DEFAULTS, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(RENUMBER, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(TOTALS, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(
            NOTES,
            reverse_sql="UPDATE asyncjobs_job SET error = note WHERE note <> '' AND error = '';",
        ),
    ]

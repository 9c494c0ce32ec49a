"""``asyncjobs_enqueue()`` refuses a run_at outside the range a job row may hold, by name, and
stores the at-most-once policy that runscheduler recorded for the job's name.

Hand-written: the CHECK constraint of 0013 already refuses such a row, but its message names a
constraint, not the argument. The body is 0006's with that check added and ``at_most_once``
read from ``asyncjobs_registered`` (same signature, so CREATE OR REPLACE keeps every grant and
caller); the other columns added since 0006 get their database defaults (0013).
"""

from importlib import import_module

from django.db import migrations, models

ENQUEUE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION asyncjobs_enqueue(
    p_name text,
    p_args jsonb DEFAULT '[]',
    p_kwargs jsonb DEFAULT '{}',
    p_run_at timestamptz DEFAULT now(),
    p_priority integer DEFAULT 0,
    p_queue text DEFAULT 'default',
    p_max_retries integer DEFAULT 3,
    p_timeout double precision DEFAULT 600
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := gen_random_uuid();
BEGIN
    IF p_name IS NULL OR length(p_name) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: job names are 1 to 255 characters, not %', p_name;
    END IF;
    IF EXISTS (SELECT 1 FROM asyncjobs_registered)
            AND NOT EXISTS (SELECT 1 FROM asyncjobs_registered WHERE name = p_name) THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: no job named % is registered', quote_literal(p_name)
            USING HINT = 'Names come from @job; runscheduler records them in asyncjobs_registered.';
    END IF;
    IF jsonb_typeof(p_args) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: args must be a JSON array, not %', p_args;
    END IF;
    IF jsonb_typeof(p_kwargs) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: kwargs must be a JSON object, not %', p_kwargs;
    END IF;
    IF p_queue IS NULL OR p_queue !~ '^[A-Za-z0-9_-]{1,70}$' THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: % is not a queue name (letters, digits, - and _)',
            quote_literal(p_queue);
    END IF;
    IF p_max_retries IS NULL OR p_max_retries < 0 THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: max_retries must be 0 or more, not %', p_max_retries;
    END IF;
    -- The bounds of django_asyncjobs.timebounds (and of the CHECK constraint): what Python can
    -- read back in any time zone.
    IF p_run_at NOT BETWEEN '0001-01-02 00:00:00+00'::timestamptz
            AND '9999-12-30 00:00:00+00'::timestamptz THEN
        RAISE EXCEPTION 'asyncjobs_enqueue: run_at % is outside the supported range % to % (UTC)',
            p_run_at, '0001-01-02 00:00:00+00', '9999-12-30 00:00:00+00';
    END IF;
    INSERT INTO asyncjobs_job (
        id, name, args, kwargs, queue, priority, status, run_at, attempts, interruptions,
        max_retries, timeout, error, traceback, created_at, worker, unique_key, depends_on,
        blocked, at_most_once
    ) VALUES (
        new_id, p_name, p_args, p_kwargs, p_queue, coalesce(p_priority, 0), 'scheduled',
        coalesce(p_run_at, now()), 0, 0, p_max_retries, nullif(p_timeout, 0), '', '', now(), '',
        NULL, '{}', false,
        -- The policy of the code, as delay() stores it: a rescue must never run such a job twice.
        coalesce((SELECT r.at_most_once FROM asyncjobs_registered AS r WHERE r.name = p_name),
            false)
    );
    PERFORM pg_notify('asyncjobs', '');
    RETURN new_id;
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("django_asyncjobs", "0013_row_policy_run_at_range"),
    ]

    operations = [
        migrations.AddField(
            model_name="registeredjob",
            name="at_most_once",
            field=models.BooleanField(default=False, verbose_name="at most once"),
        ),
        # Set in the database too: a runscheduler of the previous version inserts without it.
        migrations.RunSQL(
            "ALTER TABLE asyncjobs_registered ALTER COLUMN at_most_once SET DEFAULT false",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunSQL(
            ENQUEUE_FUNCTION,
            # Back to 0006's body: the CHECK constraint (until 0013 is reversed) still refuses.
            reverse_sql=import_module(
                "django_asyncjobs.migrations.0006_sql_enqueue"
            ).ENQUEUE_FUNCTION,
        ),
    ]

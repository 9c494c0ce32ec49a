#!/usr/bin/env python
"""Time the job admin with a million rows: changelist pages, filters, searches, detail, overview.

Usage (from the repository root, with the project's venv)::

    python benchmarks/admin_changelist.py              # 1,000,000 jobs
    python benchmarks/admin_changelist.py --rows 200000

PostgreSQL is started through ``tests.services`` unless ``DATABASE_URL`` names a running one;
the database ``bench_admin`` is dropped and recreated. Rows are generated in SQL (names, queues,
statuses, errors and ages spread like a busy system), then ANALYZEd. Each page is requested
through Django's test client as a superuser, ``--repeat`` times; the script prints the median
and the slowest time per page. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.throughput import drop_database, recreate_database  # noqa: E402
from tests.services import ensure_services, stop_services  # noqa: E402

GENERATE = """
INSERT INTO asyncjobs_job (
    id, name, args, kwargs, queue, priority, status, run_at, attempts, interruptions,
    max_retries, timeout, error, traceback, created_at, enqueued_at, started_at, finished_at,
    worker, unique_key, depends_on, blocked
)
SELECT gen_random_uuid(),
       'shop.jobs.task_' || (i %% 40),
       jsonb_build_array(i), '{}'::jsonb,
       (ARRAY['high', 'default', 'default', 'low', 'reports-daily'])[1 + i %% 5],
       i %% 3,
       s.status,
       now() - (i || ' seconds')::interval,
       1, 0, 3, 600,
       CASE WHEN s.status = 'failed' THEN 'ValueError: order ' || i || ' has no lines' ELSE '' END,
       CASE WHEN s.status = 'failed' THEN 'Traceback (most recent call last): ...' ELSE '' END,
       now() - (i || ' seconds')::interval,
       now() - (i || ' seconds')::interval,
       CASE WHEN s.status IN ('running', 'succeeded', 'failed')
            THEN now() - (i || ' seconds')::interval END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled')
            THEN now() - (i || ' seconds')::interval + interval '2 seconds' END,
       'host-' || (i %% 7) || ':' || (1000 + i %% 13), NULL, '{}', false
FROM generate_series(1, %s) AS i,
LATERAL (SELECT (ARRAY['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded',
                       'succeeded', 'succeeded', 'failed', 'scheduled', 'queued', 'running',
                       'cancelled'])[1 + i %% 12] AS status) AS s
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/admin_changelist.py")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db-name", default="bench_admin")
    args = parser.parse_args(argv)
    started = ensure_services(durable=True)
    admin_url = os.environ["DATABASE_URL"]
    try:
        recreate_database(admin_url, args.db_name)
        os.environ["DATABASE_URL"] = admin_url.rsplit("/", 1)[0] + "/" + args.db_name
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.test.utils import setup_test_environment

        settings.ALLOWED_HOSTS = ["*"]
        setup_test_environment()
        call_command("migrate", verbosity=0)
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(GENERATE, [args.rows])
            cursor.execute("ANALYZE asyncjobs_job")
            cursor.execute("SELECT id FROM asyncjobs_job WHERE status = 'failed' LIMIT 1")
            (failed_id,) = cursor.fetchone()
        print(f"generated {args.rows:,} jobs in {time.perf_counter() - began:.1f} s", flush=True)
        user = User.objects.create_superuser("bench", password="x")
        client = Client()
        client.force_login(user)
        base = "/admin/django_asyncjobs/job/"
        pages = [
            ("changelist, newest first", base),
            ("page 100", f"{base}?p=100"),
            ("status = failed", f"{base}?status__exact=failed"),
            ("queue = low", f"{base}?queue=low"),
            ("name = shop.jobs.task_7", f"{base}?name=shop.jobs.task_7"),
            ("created in the last hour", f"{base}?created=1h"),
            ("failed in queue low", f"{base}?status__exact=failed&queue=low"),
            ("search id prefix", f"{base}?q={str(failed_id)[:8]}"),
            ("search error text", f"{base}?q=has+no+lines"),
            ("job detail", f"{base}{failed_id}/change/"),
            ("queue overview", f"{base}overview/"),
        ]
        print(f"\n| page ({args.rows:,} jobs) | median | slowest |")
        print("| --- | --- | --- |")
        for label, url in pages:
            timings = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                response = client.get(url)
                timings.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise SystemExit(f"{url} answered {response.status_code}")
            print(
                f"| {label} | {statistics.median(timings) * 1000:.0f} ms "
                f"| {max(timings) * 1000:.0f} ms |",
                flush=True,
            )
        connection.close()
    finally:
        drop_database(admin_url, args.db_name)
        stop_services(started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

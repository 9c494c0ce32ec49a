"""Run the example end to end: a "say hello" job, delayed by a few seconds, printed by a worker.

    python example_project/run_example.py [--name Ada] [--delay 3]

Starts a throwaway PostgreSQL and moto_server when DATABASE_URL / AWS_ENDPOINT_URL_SQS are not
set, migrates, starts ``runscheduler`` and ``runworker`` as separate processes (as in
production), enqueues the job, waits until the worker has run it, and stops everything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="world")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds before the job runs")
    options = parser.parse_args()

    from tests.services import ensure_services, stop_services

    started = ensure_services()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("ASYNCJOBS_WAIT_TIME_SECONDS", "1")
    os.environ.setdefault("ASYNCJOBS_QUEUE_PREFIX", f"example-{os.getpid()}-")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        manage = [sys.executable, str(HERE / "manage.py")]
        processes.append(subprocess.Popen([*manage, "runscheduler"], cwd=HERE))
        processes.append(subprocess.Popen([*manage, "runworker"], cwd=HERE))

        from demo.jobs import say_hello

        from django_asyncjobs.models import Job

        job = say_hello.using(run_after=options.delay).delay(options.name)
        print(f"enqueued {job.name} id={job.id}, due in {options.delay:g} s", flush=True)
        deadline = time.monotonic() + options.delay + 60
        while time.monotonic() < deadline:
            job = Job.objects.get(pk=job.pk)
            if job.is_final:
                break
            time.sleep(0.2)
        print(f"job {job.id} is {job.status}: result={job.result!r}", flush=True)
        return 0 if job.status == "succeeded" else 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        stop_services(started)


if __name__ == "__main__":
    sys.exit(main())

"""Run the example: a "say hello" job end to end, or (``--serve``) the demo site.

    python example_project/run_example.py [--name Ada] [--delay 3]
    python example_project/run_example.py --serve [--port 8000] [--concurrency 4]

Starts a throwaway PostgreSQL and moto_server when DATABASE_URL / AWS_ENDPOINT_URL_SQS are not
set (and stops them at the end), and migrates. Without ``--serve`` it starts ``runscheduler``
and ``runworker`` as separate processes (as in production), enqueues the job, waits until the
worker has run it, and stops everything. With ``--serve`` it creates an ``admin`` / ``admin``
superuser (local use only), starts ``runjobs`` (4 jobs at once, ``--concurrency``) and
``runserver``, and serves the demo page until Ctrl+C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
MANAGE = [sys.executable, str(HERE / "manage.py")]
#: Jobs the demo's ``runjobs`` runs at once: enough to see several progress bars move together.
DEMO_CONCURRENCY = 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="world", help="who the job greets")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds before the job runs")
    parser.add_argument("--serve", action="store_true", help="serve the demo site until Ctrl+C")
    parser.add_argument("--port", type=int, default=8000, help="port of the demo site")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEMO_CONCURRENCY,
        help=f"jobs the demo runs at once ({DEMO_CONCURRENCY})",
    )
    options = parser.parse_args()

    from tests.services import ensure_services, stop_services

    started = ensure_services()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("ASYNCJOBS_WAIT_TIME_SECONDS", "1")
    os.environ.setdefault("ASYNCJOBS_QUEUE_PREFIX", f"example-{os.getpid()}-")
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        if options.serve:
            return serve(options.port, concurrency=options.concurrency)
        return say_hello_once(options.name, options.delay)
    finally:
        stop_services(started)


def say_hello_once(name: str, delay: float) -> int:
    """Enqueue "say hello" *delay* seconds from now and wait for a worker to run it."""
    from demo.jobs import say_hello

    from django_asyncjobs.models import Job

    processes = [
        subprocess.Popen([*MANAGE, "runscheduler"], cwd=HERE),
        subprocess.Popen([*MANAGE, "runworker"], cwd=HERE),
    ]
    try:
        job = say_hello.using(run_after=delay).delay(name)
        print(f"enqueued {job.name} id={job.id}, due in {delay:g} s", flush=True)
        deadline = time.monotonic() + delay + 60
        while time.monotonic() < deadline:
            job = Job.objects.get(pk=job.pk)
            if job.is_final:
                break
            time.sleep(0.2)
        print(f"job {job.id} is {job.status}: result={job.result!r}", flush=True)
        return 0 if job.status == "succeeded" else 1
    finally:
        stop(processes)


def serve(port: int, *, concurrency: int = DEMO_CONCURRENCY) -> int:
    """Run the demo site and ``runjobs`` (*concurrency* jobs at once) until Ctrl+C."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if not User.objects.filter(username="admin").exists():
        User.objects.create_superuser("admin", "admin@example.com", "admin")
    # Their own sessions: one Ctrl+C here becomes one graceful SIGTERM for each, not two.
    processes = [
        subprocess.Popen(
            [*MANAGE, "runjobs", "--concurrency", str(concurrency)],
            cwd=HERE,
            start_new_session=True,
        ),
        subprocess.Popen(
            [*MANAGE, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=HERE,
            start_new_session=True,
        ),
    ]
    print(
        f"\n  demo page: http://127.0.0.1:{port}/   admin: http://127.0.0.1:{port}/admin/ "
        "(admin / admin)\n  Ctrl+C stops everything.\n",
        flush=True,
    )
    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(processes)
    return 0


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM *processes* (a graceful stop) and wait for them."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(45)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())

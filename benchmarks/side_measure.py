"""What the ``measure`` modules of the other job systems share (Celery's, procrastinate's).

They run in those systems' own venvs, so this module needs nothing but the standard library
(and Django, set up by :func:`run`). Each phase is a function of the parsed arguments that
returns a JSON-able dict; :func:`run` prints it as the one line on stdout the comparison script
reads. Example::

    PHASES = {"drain": phase_drain}
    sys.exit(run("python -m benchmarks.x.measure", PHASES, prefix="x"))
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Phase = Callable[[argparse.Namespace], dict[str, Any]]


def logger(prefix: str) -> Callable[[str], None]:
    """Return a ``log(message)`` that writes ``[prefix HH:MM:SS] message`` to stderr."""

    def log(message: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def wait_for(
    done: Callable[[], int], n: int, *, stall_timeout: float, log: Callable[[str], None]
) -> bool:
    """Poll ``done()`` until it reaches N; False when it did not grow for ``stall_timeout`` s."""
    last_done, last_progress, last_report = -1, time.monotonic(), time.monotonic()
    while True:
        count = done()
        if count >= n:
            return True
        now = time.monotonic()
        if count != last_done:
            last_done, last_progress = count, now
        elif now - last_progress > stall_timeout:
            log(f"  no progress for {stall_timeout:.0f} s; giving up at {count}/{n}")
            return False
        if now - last_report >= 5:
            last_report = now
            log(f"  {count}/{n} done")
        time.sleep(0.2)


def pause_ms(value: str) -> tuple[float, float]:
    low, _, high = value.partition("-")
    return float(low), float(high or low)


def run(
    prog: str,
    phases: Mapping[str, Phase],
    argv: Sequence[str] | None = None,
    *,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    after_setup: Callable[[], None] | None = None,
) -> int:
    """Parse the phase and its options, set Django up, run the phase, print its JSON."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("phase", choices=sorted(phases))
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pause-ms", type=pause_ms, default=(20.0, 50.0), metavar="MIN-MAX")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stall-timeout", type=float, default=30.0)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)

    import django

    django.setup()
    if after_setup is not None:
        after_setup()
    print(json.dumps(phases[args.phase](args)), flush=True)
    return 0

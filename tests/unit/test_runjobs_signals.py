"""``run_together`` (runjobs): what a stop signal does while the children restart for a change."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from django_asyncjobs.management.commands import runjobs

#: A child that stops gracefully (in 1 s) on its first SIGTERM and at once (143) on a second,
#: as runscheduler and runworker do.
CHILD = """
import signal, sys, time
from pathlib import Path

terms = []
signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))
Path(sys.argv[1]).write_text("ready")
while not terms:
    time.sleep(0.01)
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    if len(terms) > 1:
        sys.exit(143)
    time.sleep(0.01)
"""


class OneChange:
    """File changes as runjobs' watcher reports them: one, once the child is ready."""

    def __init__(self, ready: Path) -> None:
        self.ready = ready
        self.reported = False

    def pop(self) -> str | None:
        if self.reported or not self.ready.exists():
            return None
        self.reported = True
        return "jobs.py"


@pytest.fixture
def child_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make runjobs start :data:`CHILD` as its one command; return the file it writes when
    its handler is in place."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ready = tmp_path / "ready"
    monkeypatch.setattr(
        runjobs,
        "_django_command",
        lambda arguments: ([sys.executable, str(script), str(ready)], dict(os.environ)),
    )
    return ready


def test_a_signal_while_the_children_restart_for_a_change_stops_them_gracefully(
    child_ready: Path,
) -> None:
    lines: list[str] = []
    code = run_interrupted(OneChange(child_ready), lines, after=["restarting"])
    assert lines == ["jobs.py changed; restarting.", "SIGINT received; stopping gracefully."]
    assert code == 0  # one Ctrl+C: the child finished its graceful stop, not told "at once"


def test_a_second_signal_while_the_children_restart_stops_them_at_once(child_ready: Path) -> None:
    lines: list[str] = []
    code = run_interrupted(OneChange(child_ready), lines, after=["restarting", "gracefully"])
    assert lines[-1] == "SIGINT received; stopping at once."
    assert code == 143


def run_interrupted(changes: OneChange, lines: list[str], *, after: list[str]) -> int:
    """Run one child with *changes*; send this process SIGINT (the user's Ctrl+C) once each
    word of *after* shows in what runjobs printed, and only while runjobs' handler is in place
    (a SIGINT after it would interrupt pytest itself)."""
    done = threading.Event()

    def interrupt() -> None:
        for word in after:
            deadline = time.monotonic() + 30
            while not any(word in line for line in lines):
                if done.is_set() or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    try:
        return runjobs.run_together(
            [["child"]],
            stderr=lines.append,
            changes=changes,  # type: ignore[arg-type]
        )
    finally:
        done.set()
        interrupter.join()

"""Progress of long commands: a bar redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from django_asyncjobs.management.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_carry_the_total() -> None:
    out = io.StringIO()
    progress = Progress(OutputWrapper(out), total=5, verb="deleted")
    for count in (2, 2, 1):
        progress.advance(count)
    progress.finish()
    assert out.getvalue() == "  2 of 5 deleted\n  4 of 5 deleted\n  5 of 5 deleted\n"


def test_a_terminal_gets_one_bar_redrawn_in_place() -> None:
    out = Terminal()
    progress = Progress(OutputWrapper(out), total=4, verb="retried")
    progress.advance(1)
    progress.advance(3)
    progress.finish()
    quarter = "#" * 7 + "-" * 23
    assert out.getvalue() == (
        f"\r[{quarter}]  25% 1 of 4 retried\r[{'#' * 30}] 100% 4 of 4 retried\n"
    )


def test_rows_found_during_the_run_grow_the_total() -> None:
    out = io.StringIO()
    progress = Progress(OutputWrapper(out), total=1, verb="deleted")
    progress.advance(3)
    assert out.getvalue() == "  3 of 3 deleted\n"

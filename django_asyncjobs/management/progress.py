"""Progress of long management commands: a bar on a terminal, plain lines otherwise.

Logs and CI capture plain lines (one per batch, each with the total); a terminal gets one line
redrawn in place, so a purge of millions of rows does not scroll thousands of lines.
"""

from __future__ import annotations

from django.core.management.base import OutputWrapper

#: Characters of the bar between its brackets.
BAR_WIDTH = 30


class Progress:
    """Report *done* out of *total* after each batch of a long operation.

    Example::

        progress = Progress(self.stdout, total=5000, verb="deleted")
        for count in batches:
            progress.advance(count)   # "[######------] 40% 2,000 of 5,000 deleted"
        progress.finish()
    """

    def __init__(self, out: OutputWrapper, *, total: int, verb: str) -> None:
        self.out = out
        self.total = total
        self.verb = verb
        self.done = 0
        self.terminal = out.isatty()

    def advance(self, count: int) -> None:
        """Add *count* to what is done and show it."""
        self.done += count
        # Rows may become eligible while the operation runs: the total grows with them.
        total = max(self.total, self.done)
        text = f"{self.done:,} of {total:,} {self.verb}"
        if not self.terminal:
            self.out.write(f"  {text}")
            return
        filled = BAR_WIDTH if total == 0 else BAR_WIDTH * self.done // total
        percent = 100 if total == 0 else 100 * self.done // total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.out.write(f"\r[{bar}] {percent:3d}% {text}", ending="")
        self.out.flush()

    def finish(self) -> None:
        """End the bar's line on a terminal (plain lines need nothing)."""
        if self.terminal and self.done:
            self.out.write("")

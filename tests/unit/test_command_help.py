"""The commands' ``--help``: examples kept one a line, prose wrapped to the terminal."""

from __future__ import annotations

import argparse

import pytest
from django.core.management import ManagementUtility, load_command_class


@pytest.mark.parametrize("name", ["runworker", "runscheduler", "runjobs", "asyncjobs"])
def test_help_keeps_the_examples_on_their_own_lines(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        ManagementUtility(["manage.py", name, "--help"]).execute()
    text = capsys.readouterr().out
    command = load_command_class("django_asyncjobs", name)
    prose, examples = command.help.split("\n\nExamples:\n")
    # Each example exactly as written, one a line, ready to copy...
    assert "\n\nExamples:\n" + examples + "\n" in text
    # ...while the prose is still wrapped to the terminal's width.
    assert max(len(line) for line in text.splitlines()) <= 80
    assert " ".join(text.split("\n\nExamples:\n")[0].split()).endswith(" ".join(prose.split()))


def test_asyncjobs_subcommands_keep_line_breaks_too() -> None:
    command = load_command_class("django_asyncjobs", "asyncjobs")
    parser = command.create_parser("manage.py", "asyncjobs")
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    retry = subcommands.choices["retry"]
    retry.description = "Retry jobs.\n\nExamples:\n  manage.py asyncjobs retry 3f2a9c1e"
    assert "Examples:\n  manage.py asyncjobs retry 3f2a9c1e\n" in retry.format_help()

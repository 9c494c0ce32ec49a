"""The documentation site builds without a warning, and its reference pages keep up with the code.

Every list checked here is derived from the code (the settings dataclass, the signatures of
``@job``, ``using()`` and ``run_jobs()``, the commands' argument parsers), so a new setting,
option or subcommand fails this test until it is documented.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import load_command_class
from django.core.management.base import BaseCommand

from django_asyncjobs import job
from django_asyncjobs.conf import AsyncJobsSettings
from django_asyncjobs.registry import JobDefinition
from django_asyncjobs.testing import run_jobs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
COMMANDS = ("runscheduler", "runworker", "runjobs", "asyncjobs")


def page(relative: str) -> str:
    """Return the text of a documentation page (or of README.md, relative to the repository)."""
    return (ROOT / relative).read_text(encoding="utf-8")


def table_keys(text: str) -> set[str]:
    """Return the first-column entries of Markdown table rows written as ``| `KEY` |``."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))


def settings_keys() -> set[str]:
    return {field.name.upper() for field in dataclasses.fields(AsyncJobsSettings)}


def keyword_options(function: Callable[..., object]) -> set[str]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def mentions(text: str, option: str) -> bool:
    """Return whether *text* names *option* itself (``--queue`` is not found in ``--queues``)."""
    return re.search(re.escape(option) + r"(?![\w-])", text) is not None


def parser_of(command: str) -> argparse.ArgumentParser:
    instance = load_command_class("django_asyncjobs", command)
    return instance.create_parser("manage.py", command)


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    """Return the ``--options`` of *parser* that are ours, not Django's standard ones."""
    standard = {
        option
        for action in BaseCommand().create_parser("manage.py", "x")._actions
        for option in action.option_strings
    }
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in standard
    }


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the asyncjobs command has no subcommands")


def test_site_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs comes with the 'dev' extra")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}{build.stderr}"
    assert (site / "index.html").is_file()
    assert (site / "reference" / "settings" / "index.html").is_file()


def test_settings_reference_lists_every_key_and_no_other() -> None:
    documented = table_keys(page("docs/reference/settings.md"))
    assert settings_keys() - documented == set(), "settings missing from reference/settings.md"
    assert documented - settings_keys() == set(), "reference/settings.md lists unknown settings"


def test_readme_configuration_table_lists_every_key() -> None:
    documented = table_keys(page("README.md"))
    assert settings_keys() - documented == set(), "settings missing from the README's table"


def test_job_options_reference_lists_every_decorator_and_using_option() -> None:
    documented = table_keys(page("docs/reference/job-options.md"))
    decorator = keyword_options(job)
    using = keyword_options(JobDefinition.using)
    assert {"name", "queue", "timeout", "cron"} <= decorator  # the signature is what we think
    assert {"run_after", "depends_on"} <= using
    assert decorator - documented == set(), "@job options missing from reference/job-options.md"
    assert using - documented == set(), "using() options missing from reference/job-options.md"


def test_testing_guide_lists_every_run_jobs_option() -> None:
    documented = table_keys(page("docs/how-to/testing.md"))
    assert keyword_options(run_jobs) - documented == set(), "run_jobs() options missing"


def test_commands_reference_covers_every_subcommand_and_option() -> None:
    text = page("docs/reference/commands.md")
    for command in COMMANDS:
        assert f"## `{command}`" in text, f"no section for {command}"
        missing = {o for o in long_options(parser_of(command)) if not mentions(text, o)}
        assert missing == set(), f"{command} options missing from reference/commands.md"
    for name, parser in subcommands(parser_of("asyncjobs")).items():
        heading = f"### `asyncjobs {name}`"
        assert heading in text, f"no section for asyncjobs {name}"
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        missing = {o for o in long_options(parser) if not mentions(section, o)}
        assert missing == set(), f"asyncjobs {name} options missing from its section"

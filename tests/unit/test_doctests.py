"""Every ``>>>`` example in the package's docstrings runs, and shows what it prints.

The policy: an example written with ``>>>`` runs as it is, under doctest, with Django set up and
no database (pure functions and value objects). An example that needs the database, a
registered job, a transport or a request is a plain code block instead (reST ``Example::`` and
an indented block without ``>>>``), so that no example looks as if it ran when it never does.
Hence no ``+SKIP`` either.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from types import ModuleType

import pytest

import django_asyncjobs

#: Fewer examples than this means the finder stopped finding them, not that they all pass
#: (44 ran when this was written, without those of queries, retry, signals and worker).
MINIMUM_EXAMPLES = 40
#: "..." in an expected output stands for anything, as in the examples' prose.
OPTION_FLAGS = doctest.ELLIPSIS


def module_names() -> list[str]:
    """Return the dotted name of every module of the package, migrations left out."""
    names = [django_asyncjobs.__name__]
    for info in pkgutil.walk_packages(django_asyncjobs.__path__, f"{django_asyncjobs.__name__}."):
        if ".migrations" not in info.name:
            names.append(info.name)
    return sorted(names)


def doctests_of(module: ModuleType) -> list[doctest.DocTest]:
    """Return the docstring tests defined in *module* (not those of names it imports)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module) if test.examples]


def run(tests: list[doctest.DocTest]) -> tuple[int, str]:
    """Run *tests*; return how many examples ran and the report of those that failed."""
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTION_FLAGS)
    for test in tests:
        runner.run(test, out=out.write)
    return runner.tries, out.getvalue()


@pytest.mark.parametrize("name", module_names())
def test_docstring_examples_run(name: str) -> None:
    tests = doctests_of(importlib.import_module(name))
    skipped = [
        f"{test.name} line {(test.lineno or 0) + example.lineno + 1}"
        for test in tests
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert not skipped, f"skipped examples look as if they ran; make them code blocks: {skipped}"
    _, report = run(tests)
    assert not report, f"\n{report}"


def test_the_examples_are_found() -> None:
    """The test above passes for a module without examples: check that they are found at all."""
    total = 0
    for name in module_names():
        tries, _ = run(doctests_of(importlib.import_module(name)))
        total += tries
    assert total >= MINIMUM_EXAMPLES, f"only {total} docstring examples ran"

"""The package's metadata (setup.cfg): what it imports is what it declares.

``.ci/check-package`` builds the sdist and the wheel, checks their metadata and installs the wheel
into a fresh venv; this checks, without building, that every distribution the library imports
at run time is declared, so that a fresh install does not depend on what happened to be there.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_asyncjobs"
#: Imported only where the extra is installed (behind ``try: ... except ImportError``).
OPTIONAL_IMPORTS = {
    "django_tasks": "tasks",
    "opentelemetry": "otel",
    "prometheus_client": "metrics",
}


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def requirement_names(value: str) -> set[str]:
    """The canonical distribution names of a setup.cfg requirement list."""
    lines = [line.strip() for line in value.splitlines()]
    return {canonicalize_name(Requirement(line).name) for line in lines if line}


def runtime_imports(tree: ast.AST) -> Iterator[str]:
    """Top-level names of the absolute imports in *tree*, leaving out ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        yield from _imports_of(node)


def _imports_of(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for child in node.orelse:
            yield from _imports_of(child)
        return
    if isinstance(node, ast.Import):
        yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        yield node.module.split(".")[0]
    yield from runtime_imports(node)


def imported_modules() -> dict[str, list[str]]:
    """Third-party top-level modules the library imports at run time -> the files importing them."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in runtime_imports(ast.parse(path.read_text())):
            if name in sys.stdlib_module_names or name in {"__future__", "django_asyncjobs"}:
                continue
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_declared() -> None:
    config = setup_cfg()
    required = requirement_names(config["options"]["install_requires"])
    extras = config["options.extras_require"]
    distributions = importlib.metadata.packages_distributions()
    imported = imported_modules()
    # The walk above sees what the library uses (an empty walk must not pass).
    assert {"django", "asgiref", "psycopg", "boto3", "botocore", "croniter"} <= set(imported)
    for module, files in sorted(imported.items()):
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if module in OPTIONAL_IMPORTS:
            extra = OPTIONAL_IMPORTS[module]
            assert names & requirement_names(extras[extra]), f"{module}: not in the {extra} extra"
            continue
        assert names & required, (
            f"{module} (distribution {', '.join(sorted(names))}) is imported by {files[0]} "
            "but not in install_requires"
        )


def test_the_extras_split_the_test_tools() -> None:
    extras = setup_cfg()["options.extras_require"]
    assert "playwright" in requirement_names(extras["browser"])
    assert "schemathesis" in requirement_names(extras["fuzz"])
    assert not requirement_names(extras["test"]) & {"playwright", "schemathesis"}
    assert "django-environ" in requirement_names(extras["example"])
    # dev pulls everything the whole suite and .ci/check-package need.
    dev = extras["dev"]
    assert "django-asyncjobs[test,browser,fuzz,example]" in dev
    assert {"build", "twine"} <= requirement_names(dev)

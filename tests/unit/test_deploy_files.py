"""The deployment files of the example project (example_project/deploy/), checked without Docker.

No container engine runs in CI, so ``compose.yaml`` and the ``Dockerfile`` are never started
there. What can go wrong in them without one is checked here: a command or option that does not
exist (the container would exit at once), a stop period shorter than the worker's ``--grace``
(Docker would SIGKILL jobs it meant to let finish), a variable the settings never read (a typo
that silently leaves the default), a variable the containers need and lack, and a health check
that would never match what ``asyncjobs processes --json`` prints.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import re
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import find_commands, load_command_class

from django_asyncjobs.management.commands.asyncjobs import _process_as_dict
from django_asyncjobs.models import Process, ProcessKind
from django_asyncjobs.supervisor import HAND_BACK_SECONDS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_project"
DEPLOY = EXAMPLE / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SETTINGS_FILE = EXAMPLE / "example_project" / "settings.py"
#: Read by boto3 itself, not by the settings (the settings' docstring says so).
BOTO3_VARIABLES = frozenset(
    {"AWS_ENDPOINT_URL_SQS", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
)
#: What every Django container must set, whatever the settings' defaults: the default database
#: is 127.0.0.1 (the container itself), the default secret key is public, and boto3 needs the
#: emulator's address, a region and (dummy) credentials.
REQUIRED_IN_CONTAINERS = frozenset({"DATABASE_URL", "DJANGO_SECRET_KEY"}) | BOTO3_VARIABLES
#: How compose names a service built from the example's image.
DJANGO_IMAGE = "asyncjobs-example"
SHELL_OPERATORS = frozenset({"&&", "||", "|", ";", "&"})


def compose() -> dict[str, Any]:
    """compose.yaml as compose reads it (PyYAML resolves the ``<<`` merge keys too)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def django_services() -> dict[str, dict[str, Any]]:
    """The services that run the example's image: the ones that run ``manage.py``."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == DJANGO_IMAGE
    }


@dataclass(frozen=True)
class ManagePy:
    """One ``python manage.py NAME ARGS`` found in the deployment files."""

    where: str
    name: str
    args: list[str]


def simple_commands(script: str) -> Iterator[list[str]]:
    """Split a shell *script* into its simple commands (at ``&&``, ``|``, ``;``...).

    >>> list(simple_commands("a -x && b 'c d' | e"))
    [['a', '-x'], ['b', 'c d'], ['e']]
    """
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in SHELL_OPERATORS:
            yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def argv_lists(value: str | list[str]) -> Iterator[list[str]]:
    """The argument vectors a compose ``command`` or health check ``test`` runs.

    A string, ``CMD-SHELL`` and ``sh -c`` run a shell script; ``$$`` is compose's escape of $.
    """
    if isinstance(value, str):
        yield from simple_commands(value.replace("$$", "$"))
        return
    if value[:1] == ["CMD-SHELL"]:
        yield from simple_commands(value[1].replace("$$", "$"))
        return
    if value[:1] == ["CMD"]:
        value = value[1:]
    if value[:2] == ["sh", "-c"]:
        yield from simple_commands(value[2].replace("$$", "$"))
        return
    yield list(value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions of its final stage, as (INSTRUCTION, rest), lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), " ".join(rest.split())))
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_cmd() -> list[str]:
    """The image's CMD (exec form)."""
    (cmd,) = [rest for word, rest in dockerfile_instructions() if word == "CMD"]
    value: list[str] = yaml.safe_load(cmd)  # the exec form is a JSON array
    return value


def manage_py_invocations() -> list[ManagePy]:
    """Every ``manage.py`` command run by compose.yaml (commands, health checks) and the image."""
    sources: list[tuple[str, str | list[str]]] = [("Dockerfile CMD", dockerfile_cmd())]
    for name, service in compose()["services"].items():
        if "command" in service:
            sources.append((f"{name}.command", service["command"]))
        if "healthcheck" in service:
            sources.append((f"{name}.healthcheck", service["healthcheck"]["test"]))
    found = []
    for where, value in sources:
        for argv in argv_lists(value):
            if "manage.py" in argv:
                at = argv.index("manage.py")
                found.append(ManagePy(where, argv[at + 1], argv[at + 2 :]))
    return found


def example_settings() -> ast.Module:
    return ast.parse(SETTINGS_FILE.read_text())


def example_installed_apps() -> list[str]:
    for node in example_settings().body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "INSTALLED_APPS" for t in node.targets
        ):
            apps: list[str] = ast.literal_eval(node.value)
            return apps
    raise AssertionError("example settings have no INSTALLED_APPS")


def example_commands() -> dict[str, str]:
    """Management command name -> app, as ``manage.py`` of the example finds them.

    Django's own rule (``django.core.management.get_commands``): django.core's commands, then
    each installed app's, the first app listed winning.
    """
    import django.core.management

    commands = dict.fromkeys(find_commands(django.core.management.__path__[0]), "django.core")
    for app in reversed(example_installed_apps()):
        local = EXAMPLE / app.replace(".", "/")
        if local.is_dir():
            path = local
        else:
            spec = importlib.util.find_spec(app)
            assert spec and spec.submodule_search_locations, app
            path = Path(spec.submodule_search_locations[0])
        commands.update(dict.fromkeys(find_commands(str(path / "management")), app))
    return commands


def parsed_options(invocation: ManagePy) -> dict[str, Any]:
    """Parse the invocation's arguments with its command's own parser, running nothing.

    The parser of ``call_command``: a bad option raises CommandError instead of exiting.
    """
    commands = example_commands()
    assert invocation.name in commands, (
        f"{invocation.where}: manage.py {invocation.name} is not a management command of the "
        f"example project"
    )
    command = load_command_class(commands[invocation.name], invocation.name)
    parser = command.create_parser("manage.py", invocation.name)
    return vars(parser.parse_args(invocation.args))


def seconds(duration: str) -> float:
    """Parse a compose duration such as ``45s``, ``1m30s`` or ``1h``.

    >>> seconds("1m30s")
    90.0
    """
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, u in parts)


def env_reads() -> dict[str, bool]:
    """The variables the example settings read with django-environ -> whether one has a default."""
    reads: dict[str, bool] = {}
    for node in ast.walk(example_settings()):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        target = func.value if isinstance(func, ast.Attribute) else func
        if not (isinstance(target, ast.Name) and target.id == "env"):
            continue
        first = node.args[0]
        assert isinstance(first, ast.Constant) and isinstance(first.value, str)
        reads[first.value] = len(node.args) > 1 or any(k.arg == "default" for k in node.keywords)
    return reads


def test_every_manage_py_command_is_a_real_command_with_options_it_accepts() -> None:
    invocations = manage_py_invocations()
    # The parsing above found what the deployment runs (a file reshuffled must not empty this).
    assert {i.name for i in invocations} >= {
        "migrate",
        "asyncjobs",
        "runserver",
        "runscheduler",
        "runworker",
    }
    for invocation in invocations:
        parsed_options(invocation)


def test_a_wrong_option_would_be_caught() -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--gracee"):
        parsed_options(ManagePy("test", "runworker", ["--gracee", "30"]))
    with pytest.raises(AssertionError, match="not a management command"):
        parsed_options(ManagePy("test", "runworkers", []))


def test_stop_periods_cover_the_grace_and_stop_with_sigterm() -> None:
    services = compose()["services"]
    graced = []
    for invocation in manage_py_invocations():
        service = invocation.where.removesuffix(".command")
        if invocation.where != f"{service}.command":
            continue
        options = parsed_options(invocation)
        assert services[service].get("stop_signal") == "SIGTERM", service
        if "grace" not in options:
            continue
        graced.append(service)
        # Docker's default is 10 s, less than the worker's default --grace (30 s).
        assert "stop_grace_period" in services[service], service
        stop = seconds(services[service]["stop_grace_period"])
        # After --grace, worker processes get HAND_BACK_SECONDS to hand their jobs back before
        # the supervisor kills them; Docker's SIGKILL must come later still.
        assert stop > options["grace"] + HAND_BACK_SECONDS, (
            f"{service}: stop_grace_period {stop:g}s is not above --grace {options['grace']:g}s "
            f"+ {HAND_BACK_SECONDS:g}s of hand-back"
        )
    assert graced == ["worker"]


def test_the_worker_scales_and_one_scheduler_runs() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    # Replicas need names and ports of their own: compose's, not fixed ones.
    assert "container_name" not in worker and "ports" not in worker
    assert services["scheduler"].get("deploy", {}).get("replicas", 1) == 1
    # The long-running processes start once the schema and the queues exist.
    for name in ("web", "scheduler", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }


def test_every_variable_set_is_read_and_every_needed_one_is_set() -> None:
    reads = env_reads()
    assert {"DATABASE_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG"} <= set(reads)
    docstring = ast.get_docstring(example_settings()) or ""
    for name in BOTO3_VARIABLES:
        assert name in docstring, f"the example settings' docstring should mention {name}"
    required = {name for name, has_default in reads.items() if not has_default}
    required |= REQUIRED_IN_CONTAINERS
    services = django_services()
    assert set(services) == {"migrate", "web", "scheduler", "worker"}
    for name, service in services.items():
        environment = service["environment"]
        assert isinstance(environment, dict), f"{name}: write environment as a mapping"
        unknown = set(environment) - set(reads) - BOTO3_VARIABLES
        assert not unknown, f"{name} sets {sorted(unknown)}, which the example settings never read"
        missing = required - set(environment)
        assert not missing, f"{name} lacks {sorted(missing)}"


def _process_line(*, kind: str, host: str, alive: bool) -> str:
    """A line of ``asyncjobs processes --json`` as the command prints it."""
    import json

    now = dt.datetime.now(dt.UTC)
    process = Process(
        id=uuid.uuid4(),
        kind=kind,
        name=f"{host}:7",
        host=host,
        pid=7,
        queues=["default"],
        concurrency=4,
        version="0",
        started_at=now,
        heartbeat_at=now,
    )
    process.alive = alive
    process.running_jobs = []
    return json.dumps(_process_as_dict(process))


def _grep_pipeline_matches(test: list[str], line: str, *, hostname: str) -> bool:
    """Whether the health check's ``grep`` stages all let *line* through."""
    stages = list(argv_lists(test))
    greps = [stage for stage in stages if stage[0] == "grep"]
    assert len(greps) == len(stages) - 1, f"only greps follow the command: {stages}"
    for grep in greps:
        pattern = grep[-1].replace("$HOSTNAME", hostname)
        assert not set(grep[1:-1]) - {"-q"}, grep
        # The patterns hold no regular-expression characters: a substring test is grep's.
        assert not re.search(r"[][.*^\\]", pattern), pattern
        if pattern not in line:
            return False
    return True


@pytest.mark.parametrize(("service", "kind"), [("worker", "worker"), ("scheduler", "scheduler")])
def test_process_health_checks_match_this_containers_live_process_only(
    service: str, kind: str
) -> None:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert kind in ProcessKind.values

    def healthy(line: str) -> bool:
        return _grep_pipeline_matches(test, line, hostname="c0ffee")

    assert healthy(_process_line(kind=kind, host="c0ffee", alive=True))
    assert not healthy(_process_line(kind=kind, host="c0ffee", alive=False))
    assert not healthy(_process_line(kind=kind, host="other", alive=True))
    other_kind = "scheduler" if kind == "worker" else "worker"
    assert not healthy(_process_line(kind=other_kind, host="c0ffee", alive=True))


def test_every_service_has_a_health_check() -> None:
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, name
    # The web check asks for a page of the example's URLconf over HTTP.
    (argv,) = argv_lists(services["web"]["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:8000(/[^']*)", argv[-1])
    assert url
    urls = (EXAMPLE / "example_project" / "urls.py").read_text()
    assert f'path("{url[1].lstrip("/")}"' in urls


def test_the_image_runs_a_real_command_from_the_example() -> None:
    cmd = dockerfile_cmd()
    assert cmd[:2] == ["python", "manage.py"]
    parsed_options(ManagePy("Dockerfile CMD", cmd[2], cmd[3:]))
    instructions = dockerfile_instructions()
    assert not [rest for word, rest in instructions if word == "ENTRYPOINT"]
    # manage.py lies in the WORKDIR the CMD runs in.
    workdir = [rest for word, rest in instructions if word == "WORKDIR"][-1]
    assert ("COPY", "example_project/ ./") in instructions and workdir == "/app"
    assert (EXAMPLE / "manage.py").is_file()
    # compose builds this Dockerfile from the repository root, and the root has what it copies.
    build = compose()["x-django"]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source


def test_the_docs_say_the_files_are_not_run_in_ci() -> None:
    how_to = (ROOT / "docs" / "how-to" / "deploy-compose.md").read_text()
    assert "not run in CI" in how_to
    assert "NOT RUN IN CI" in COMPOSE_FILE.read_text()
    assert "deploy-compose.md" in (ROOT / "mkdocs.yml").read_text()

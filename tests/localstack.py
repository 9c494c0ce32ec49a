"""LocalStack as a second SQS endpoint for the tests: its venv, and the server in host mode.

moto_server is the run's SQS endpoint; the tests marked ``localstack`` (the ``localstack`` value
of the ``sqs_endpoint`` parameter, tests/conftest.py) run against LocalStack too, a second,
independent emulator. LocalStack runs on the host, never in a container, from a venv of its
own: it needs Python 3.13 and pins of its own (``tests/localstack-requirements.txt``), which
must not meet the project's venv. The venv is built on first use, and again when the
requirements file changes; tests/plugin.py starts one LocalStack for the run, in the background
once the tests are collected if a selected test needs it, and stops it at the end.

Command line (``.ci/run`` builds the venv before the tests, so that no test waits for it)::

    python -m tests.localstack build-venv

Environment:

- ``ASYNCJOBS_TEST_LOCALSTACK_URL``: use the LocalStack listening there (for example its Docker
  image) instead of building and starting one.
- ``ASYNCJOBS_TEST_LOCALSTACK_VENV``: the venv to use or build (default ``tests/.localstack-venv``).
- ``ASYNCJOBS_TEST_LOCALSTACK_PYTHON``: the Python 3.13 to build it with (default: ``python3.13``
  on PATH, else pyenv's).

Only the standard library is used, as in tests/services.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.services import ServerProcess

__all__ = [
    "LOCALSTACK_PYTHON_VERSION",
    "REQUIREMENTS",
    "BackgroundStart",
    "LocalStackServer",
    "default_venv",
    "ensure_venv",
    "find_python",
    "main",
]

TESTS = Path(__file__).resolve().parent
#: The pins LocalStack runs with; the venv is rebuilt when this file changes.
REQUIREMENTS = TESTS / "localstack-requirements.txt"
#: The Python LocalStack is known to start with, with the pins above.
LOCALSTACK_PYTHON_VERSION = (3, 13)
#: A copy of the requirements the venv was last built from, inside the venv.
_STAMP = "asyncjobs-requirements.txt"
#: Sent by the first SQS request to a fresh LocalStack, which loads its SQS provider then
#: (about 5 s here): better during start-up than inside a test with timing assertions.
_WARM_UP_HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    "X-Amz-Target": "AmazonSQS.ListQueues",
    # LocalStack picks the service from the credential scope; it checks no signature.
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, "
        "SignedHeaders=host, Signature=0"
    ),
}


def _log(message: str) -> None:
    print(f"tests.localstack: {message}", file=sys.stderr, flush=True)


def default_venv() -> Path:
    """Return the venv LocalStack runs from: ``ASYNCJOBS_TEST_LOCALSTACK_VENV`` or the default."""
    configured = os.environ.get("ASYNCJOBS_TEST_LOCALSTACK_VENV")
    return Path(configured) if configured else TESTS / ".localstack-venv"


def _version_of(python: str) -> tuple[int, ...] | None:
    """Return the (major, minor) version of the interpreter *python*, or None if it does not run.

    A pyenv shim exists on PATH for every version pyenv knows but fails when that version is not
    selected, so running it is the only test.
    """
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return tuple(int(part) for part in done.stdout.split())


def _candidates() -> Iterator[str]:
    name = "python{}.{}".format(*LOCALSTACK_PYTHON_VERSION)
    configured = os.environ.get("ASYNCJOBS_TEST_LOCALSTACK_PYTHON")
    if configured:
        yield configured
        return
    on_path = shutil.which(name)
    if on_path:
        yield on_path
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pattern = "{}/versions/{}.{}.*/bin/{}".format(pyenv_root, *LOCALSTACK_PYTHON_VERSION, name)
    yield from sorted(glob.glob(pattern), reverse=True)
    yield from (f"/usr/local/bin/{name}", f"/usr/bin/{name}")


def find_python() -> Path:
    """Return a Python 3.13 interpreter to build LocalStack's venv with.

    ``ASYNCJOBS_TEST_LOCALSTACK_PYTHON`` when set; otherwise ``python3.13`` on PATH (a pyenv
    shim counts only if it runs), pyenv's newest 3.13, then /usr/local/bin and /usr/bin. Raises
    RuntimeError, saying what was tried, when none runs.
    """
    tried: list[str] = []
    for candidate in _candidates():
        if candidate in tried:
            continue
        tried.append(candidate)
        if _version_of(candidate) == LOCALSTACK_PYTHON_VERSION:
            return Path(candidate)
    wanted = "{}.{}".format(*LOCALSTACK_PYTHON_VERSION)
    raise RuntimeError(
        f"LocalStack needs Python {wanted}, and none was found (tried: {', '.join(tried)}). "
        f"Install it (for example `pyenv install {wanted}`) or name it in "
        "ASYNCJOBS_TEST_LOCALSTACK_PYTHON"
    )


def _venv_ready(python: Path, venv: Path) -> bool:
    stamp = venv / _STAMP
    if not stamp.is_file() or stamp.read_text() != REQUIREMENTS.read_text():
        return False
    try:
        done = subprocess.run(
            [str(python), "-c", "import localstack.runtime.main"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def _locked(venv: Path) -> Iterator[None]:
    # Beside the venv, not in it: `venv --clear` empties the venv's directory.
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_venv(venv: Path | None = None, *, log: Callable[[str], None] = _log) -> Path:
    """Return the python of LocalStack's venv, building the venv first if needed.

    The venv is ready when it was built from the current ``tests/localstack-requirements.txt``
    and imports LocalStack; otherwise it is created (with :func:`find_python`) or its packages
    are installed again, which takes a minute or two. Raises RuntimeError with pip's output when
    that fails. Safe to call from two runs at once: the second waits for the first's build.

    Example::

        python = ensure_venv()  # tests/.localstack-venv/bin/python
        server = LocalStackServer(python).start()
    """
    venv = (venv or default_venv()).absolute()
    python = venv / "bin" / "python"
    with _locked(venv):
        if _venv_ready(python, venv):
            return python
        (venv / _STAMP).unlink(missing_ok=True)
        if _version_of(str(python)) != LOCALSTACK_PYTHON_VERSION:
            base = find_python()
            log(f"creating LocalStack's venv {venv} with {base}")
            # --clear: a venv whose interpreter is gone or of another version starts afresh.
            _run([str(base), "-m", "venv", "--clear", str(venv)], what="python -m venv")
        log(f"installing {REQUIREMENTS.name} into {venv} (a minute or two, once)")
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            what="pip install",
        )
        (venv / _STAMP).write_text(REQUIREMENTS.read_text())
        if not _venv_ready(python, venv):
            (venv / _STAMP).unlink()
            raise RuntimeError(f"LocalStack's venv {venv} cannot import localstack.runtime.main")
    return python


def _run(command: list[str], *, what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}) while building LocalStack's venv:\n"
            + "\n".join(output[-30:])
        )


class LocalStackServer(ServerProcess):
    """Run LocalStack's SQS on 127.0.0.1 from its venv, in host mode, with its files in a temp dir.

    Only SQS is started, nothing is fetched from the internet, and the start returns once SQS
    answers a request. Like every :class:`~tests.services.ServerProcess` it can be paused.

    Example::

        with LocalStackServer(ensure_venv()) as localstack:
            sqs = boto3.client("sqs", endpoint_url=localstack.url)
    """

    name = "localstack"

    def __init__(self, python: Path, startup_timeout: float = 60.0) -> None:
        """Prepare a server run by *python*, the interpreter of LocalStack's venv."""
        super().__init__(startup_timeout=startup_timeout)
        self.python = python

    def stop(self, timeout: float = 1.0) -> None:
        """Terminate the server, killing it after *timeout*, and delete its directory.

        The grace is short: after SIGTERM LocalStack spends about 10 s "stopping all services",
        and nothing it holds is worth keeping.
        """
        super().stop(timeout)

    def _command(self, port: int) -> list[str]:
        return [str(self.python), "-m", "localstack.runtime.main"]

    def _environment(self, port: int) -> dict[str, str]:
        # Not this process's environment: a developer's LocalStack settings (DEBUG, PERSISTENCE,
        # ...) must not change the emulator the tests meet.
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            # LocalStack (through plux) caches under ~/.cache: keep that in the temp dir too.
            "HOME": str(self.tmpdir),
            "SERVICES": "sqs",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "LOCALSTACK_HOST": f"127.0.0.1:{port}",
            # Inside a container (as on many CI machines) LocalStack assumes it is its own and
            # writes to /var/lib/localstack and /tmp/localstack; host mode keeps it all below
            # FILESYSTEM_ROOT.
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(self.tmpdir / "filesystem"),
            # No DNS server of its own, no certificate download, no usage events sent home.
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
        }

    def _ready(self) -> bool:
        body = self._get("/_localstack/health")
        if body is None:
            return False
        try:
            state = json.loads(body)["services"]["sqs"]
        except (ValueError, KeyError, TypeError):
            return False
        if state not in ("available", "running"):
            return False
        request = urllib.request.Request(
            self.url, data=b"{}", method="POST", headers=_WARM_UP_HEADERS
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                response.read()
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError):
            return False


class BackgroundStart:
    """Build the venv if need be and start a :class:`LocalStackServer`, in a thread.

    LocalStack takes seconds to start (more on a busy machine, and minutes when its venv must be
    built first): started as soon as it is known to be needed, it is ready by the time the
    first test that needs it runs, and the tests before that one run meanwhile.

    Example::

        start = BackgroundStart()
        ...  # other work
        url = start.server().url  # waits for the start; raises its error
        start.stop()
    """

    def __init__(self, *, log: Callable[[str], None] = _log) -> None:
        self._server: LocalStackServer | None = None
        self._error: Exception | None = None
        # An Event, not Thread.join(): a join interrupted by Ctrl+C can leave the thread marked
        # as ended while it still runs (Python 3.11), and stop() would then return before the
        # server it is starting exists, leaving that server behind.
        self._done = threading.Event()
        thread = threading.Thread(
            target=self._start, args=(log,), name="localstack-start", daemon=True
        )
        thread.start()

    def _start(self, log: Callable[[str], None]) -> None:
        try:
            self._server = LocalStackServer(ensure_venv(log=log)).start()
        except Exception as exc:
            self._error = exc
        finally:
            self._done.set()

    def server(self) -> LocalStackServer:
        """Wait for the start to end; return the running server, or raise why it did not start."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._server is not None
        return self._server

    def stop(self) -> None:
        """Wait for the start to end, then stop the server if it runs."""
        self._done.wait()
        if self._server is not None:
            self._server.stop()
            self._server = None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the ``build-venv`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.localstack",
        description="LocalStack, the second SQS endpoint of the tests.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "build-venv",
        help="build LocalStack's venv (ASYNCJOBS_TEST_LOCALSTACK_VENV, default "
        "tests/.localstack-venv) unless it is ready; print its python",
    )
    parser.parse_args(argv)
    try:
        python = ensure_venv()
    except RuntimeError as exc:
        print(f"tests.localstack: error: {exc}", file=sys.stderr)
        return 1
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The example's jobs: autodiscovered because ``demo`` is an installed app."""

from __future__ import annotations

from django_asyncjobs import job


@job
def say_hello(name: str) -> str:
    """Print a greeting in the worker (the seed documents' "say hello after a delay")."""
    message = f"Hello, {name}!"
    print(message, flush=True)  # the point of the example is to see it in the worker's output
    return message


@job
class SayHello:
    """The same as a class-based job, like the seeds' ``BaseJob`` subclasses."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self) -> str:
        return say_hello(self.name)

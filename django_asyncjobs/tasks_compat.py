"""One place that knows where Django's Tasks API lives: ``django.tasks`` (Django 6.0+) or the
``django-tasks`` backport (``django_tasks``, for Django 4.2 and 5.2).

Everything else imports these names from here::

    from django_asyncjobs.tasks_compat import Task, TaskResult, task_backends

Importing this module without either raises :class:`ImportError` saying what to install.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # django-stubs describes django.tasks; the backport has the same names
    from django.tasks import (
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started

    SOURCE = "django"
else:
    try:
        from django.tasks import (
            Task,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            default_task_backend,
            task,
            task_backends,
        )
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started

        #: Where the API came from: "django" or "backport".
        SOURCE = "django"
    except ImportError:
        try:
            from django_tasks import (
                TaskContext,
                TaskResult,
                TaskResultStatus,
                default_task_backend,
                task,
                task_backends,
            )
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskError
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist
            from django_tasks.signals import task_enqueued, task_finished, task_started
        except ImportError as exc:
            raise ImportError(
                "django_asyncjobs.tasks_backend needs Django's Tasks API: Django 6.0 or newer, "
                "or the django-tasks backport on older Django "
                "(pip install 'django-asyncjobs[tasks]')"
            ) from exc
        SOURCE = "backport"

#: Whether ``@task(...)`` passes extra keyword arguments (max_retries=...) to the task class:
#: Django 6.1+ and the backport do, Django 6.0 does not.
ACCEPTS_TASK_OPTIONS = any(
    p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(task).parameters.values()
)

__all__ = [
    "ACCEPTS_TASK_OPTIONS",
    "SOURCE",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "default_task_backend",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

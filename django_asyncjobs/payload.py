"""JSON-only job arguments and results, and the doorbell message body.

Arguments are checked when a job is enqueued, so that a bad value raises at the call site with the
path of the offending value instead of failing later in a worker. Messages carry only a job id and a
dispatch token: arguments live in PostgreSQL and never travel through SQS.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import MalformedMessage

#: Deeper nesting is refused: it is never intended, and it can exhaust the stack on decode.
MAX_DEPTH = 64
MESSAGE_VERSION = 1
#: A doorbell body is under 100 bytes; anything far larger is not ours and is not parsed.
MAX_MESSAGE_BODY_BYTES = 1024

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


def text_error(text: str) -> str:
    r"""Return why PostgreSQL cannot store *text* in a JSON document, or ``""`` when it can.

    >>> text_error("caf\u00e9"), text_error("\ud800")
    ('', "contains a lone surrogate ('\\ud800'), which is not valid UTF-8")
    """
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    if text.isascii():  # the common case, and never a surrogate: no need to encode
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Python strings may hold half of a UTF-16 pair (json.loads("\"\\ud800\"") makes one);
        # UTF-8, and so PostgreSQL, cannot.
        return (
            f"contains a lone surrogate ({exc.object[exc.start : exc.end]!r}), "
            "which is not valid UTF-8"
        )
    return ""


def storable_text(text: str) -> str:
    r"""Return *text* with what PostgreSQL cannot store escaped: NUL and lone surrogates.

    For text that is shown, never parsed back, such as a failed job's error and traceback (an
    exception message may quote anything the job read).

    >>> storable_text("bad \ud800 and \x00")
    'bad \\ud800 and \\x00'
    """
    if text.isascii() and "\x00" not in text:
        return text
    escaped = text.replace("\x00", "\\x00")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


def _check(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TypeError(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, str):
        problem = text_error(value)
        if problem:
            raise TypeError(f"{path} {problem}")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_key(key, path)
            _check(item, f"{path}[{key!r}]", depth + 1)
        return
    raise TypeError(
        f"{path} {_describe(value)}, which does not survive a JSON round trip{_hint(value)}"
    )


def _describe(value: Any) -> str:
    # Never repr() a QuerySet (it runs a query) nor a model instance (its __str__ may follow a
    # foreign key): the message is built on the error path, perhaps with no database at hand.
    from django.db.models import Model, QuerySet

    kind = type(value).__name__
    if isinstance(value, QuerySet):
        return f"is a QuerySet of {value.model.__name__}"
    if isinstance(value, Model):
        return f"is a {kind} (pk={value.pk!r})"
    return f"is a {kind} ({value!r:.80})"


def _hint(value: Any) -> str:
    from django.db.models import Model, QuerySet

    if isinstance(value, tuple):
        return "; pass a list instead"
    if isinstance(value, QuerySet):
        return "; pass a list of primary keys, list(queryset.values_list('pk', flat=True))"
    if isinstance(value, Model):
        # The job fetches the row when it runs, so it sees the data as it is then.
        kind = type(value).__name__
        return f"; pass its primary key ({value.pk!r}) and fetch the {kind} in the job"
    return ""


def _check_key(key: object, path: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"{path} has the key {key!r}; JSON object keys must be strings")
    problem = text_error(key)
    if problem:
        raise TypeError(f"{path} has the key {key!r}, which {problem}")


def check_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any], *, max_bytes: int
) -> tuple[list[Any], dict[str, Any], int]:
    """Validate job arguments and return them as JSON-ready ``(args, kwargs, size_bytes)``.

    Raises :class:`TypeError` naming the first value that would not come back unchanged from JSON
    (``kwargs['when']`` is a datetime ...), and :class:`ValueError` when the encoded arguments
    are larger than *max_bytes* UTF-8 bytes.

    >>> check_arguments([1, "a"], {"b": [True]}, max_bytes=1024)[:2]
    ([1, 'a'], {'b': [True]})
    """
    for index, value in enumerate(args):
        _check(value, f"args[{index}]", 1)
    for key, value in kwargs.items():
        _check_key(key, "kwargs")
        _check(value, f"kwargs[{key!r}]", 1)
    size = json_size_bytes([list(args), dict(kwargs)])
    if size > max_bytes:
        raise ValueError(f"job arguments are {size:,} bytes of JSON; the limit is {max_bytes:,}")
    return list(args), dict(kwargs), size


def json_size_bytes(value: Any) -> int:
    """Return the size of *value* as compact JSON, in UTF-8 bytes (what SQS and limits count)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def check_result(value: Any, *, max_bytes: int) -> Any:
    """Return *value* when it can be stored as a job result, else raise.

    :class:`TypeError` when it does not survive a JSON round trip, :class:`ValueError` when its
    JSON is larger than *max_bytes* UTF-8 bytes (it is never truncated).

    >>> check_result({"total": 5}, max_bytes=1024)
    {'total': 5}
    """
    _check(value, "the job's return value", 1)
    size = json_size_bytes(value)
    if size > max_bytes:
        raise ValueError(
            f"the job's return value is {size:,} bytes of JSON; the limit is {max_bytes:,}"
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Doorbell:
    """The content of one transport message: which job, and which dispatch of it."""

    job_id: uuid.UUID
    dispatch_token: uuid.UUID

    def encode(self) -> str:
        """Return the message body.

        >>> Doorbell(job_id=uuid.UUID(int=1), dispatch_token=uuid.UUID(int=2)).encode()[:8]
        '{"v":1,"'
        """
        return json.dumps(
            {"v": MESSAGE_VERSION, "job": str(self.job_id), "d": str(self.dispatch_token)},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, body: str) -> Doorbell:
        """Parse a message body, raising :class:`MalformedMessage` for anything not ours."""
        if len(body) > MAX_MESSAGE_BODY_BYTES:
            raise MalformedMessage(f"message body is {len(body):,} characters; not a doorbell")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise MalformedMessage(f"message body is not JSON: {body[:100]!r}") from exc
        if not isinstance(data, dict) or set(data) != {"v", "job", "d"}:
            raise MalformedMessage(f"message body has the wrong shape: {body[:100]!r}")
        if data["v"] != MESSAGE_VERSION:
            raise MalformedMessage(f"message version {data['v']!r} is not supported")
        try:
            return cls(job_id=uuid.UUID(str(data["job"])), dispatch_token=uuid.UUID(str(data["d"])))
        except ValueError as exc:
            raise MalformedMessage(f"message body has an invalid id: {body[:100]!r}") from exc

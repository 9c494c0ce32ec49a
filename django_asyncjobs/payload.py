"""JSON-only job arguments and results, and the doorbell message body.

Arguments are checked when a job is enqueued, so that a bad value raises at the call site with the
path of the offending value instead of failing later in a worker. Messages carry only a job id and a
dispatch token per job (one message may name up to ``MAX_JOBS_PER_MESSAGE`` jobs): arguments live
in PostgreSQL and never travel through SQS.
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
#: A message naming one job: ``{"v":1,"job":ID,"d":TOKEN}`` (what every version has sent).
MESSAGE_VERSION = 1
#: A message naming several jobs: ``{"v":2,"jobs":[[ID,TOKEN,PRIORITY],...]}``, highest
#: priority first. Workers read both; a one-job message is always sent as version 1, so a
#: worker of an older release still reads what a scheduler sends while the load is light.
MULTI_MESSAGE_VERSION = 2
#: One message names at most this many jobs: one send, one receive and one delete serve them
#: all. 100 jobs are about 8.5 KB of JSON, so a batch of ten messages stays far under SQS's
#: 256 KiB limit on a SendMessageBatch request.
MAX_JOBS_PER_MESSAGE = 100
#: The largest doorbell is under 9 KB; anything far larger is not ours and is not parsed.
MAX_MESSAGE_BODY_BYTES = 16 * 1024

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


#: One encoder for every size: json.dumps() with options builds a new one per call, a third of
#: the time of checking a bulk enqueue's small arguments.
_COMPACT_UTF8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_size_bytes(value: Any) -> int:
    """Return the size of *value* as compact JSON, in UTF-8 bytes (what SQS and limits count)."""
    return len(_COMPACT_UTF8.encode(value).encode("utf-8"))


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
    """One job named by a transport message: which job, which dispatch of it, its priority.

    The priority only orders the jobs a worker holds; the row's own is what counts.
    """

    job_id: uuid.UUID
    dispatch_token: uuid.UUID
    priority: int = 0

    def encode(self) -> str:
        """Return the body of a message naming this job alone.

        >>> Doorbell(job_id=uuid.UUID(int=1), dispatch_token=uuid.UUID(int=2)).encode()[:8]
        '{"v":1,"'
        """
        return encode_message([self])

    @classmethod
    def decode(cls, body: str) -> Doorbell:
        """Parse the body of a message naming one job; :class:`MalformedMessage` otherwise."""
        bells = decode_message(body)
        if len(bells) != 1:
            raise MalformedMessage(f"message names {len(bells)} jobs, not one")
        return bells[0]


def encode_message(bells: Sequence[Doorbell]) -> str:
    """Return the body of a message naming *bells* (1 to ``MAX_JOBS_PER_MESSAGE`` of them).

    >>> one = Doorbell(job_id=uuid.UUID(int=1), dispatch_token=uuid.UUID(int=2), priority=5)
    >>> len(decode_message(encode_message([one, one])))
    2
    """
    if not 1 <= len(bells) <= MAX_JOBS_PER_MESSAGE:
        raise ValueError(f"a message names 1 to {MAX_JOBS_PER_MESSAGE} jobs, not {len(bells)}")
    if len(bells) == 1:
        (bell,) = bells
        data: dict[str, Any] = {
            "v": MESSAGE_VERSION,
            "job": str(bell.job_id),
            "d": str(bell.dispatch_token),
        }
    else:
        data = {
            "v": MULTI_MESSAGE_VERSION,
            "jobs": [[str(b.job_id), str(b.dispatch_token), b.priority] for b in bells],
        }
    return json.dumps(data, separators=(",", ":"))


def decode_message(body: str) -> list[Doorbell]:
    """Parse a message body into the jobs it names (in its order), raising
    :class:`MalformedMessage` for anything not ours: a wrong shape, an unknown version, an
    invalid id, a priority that is not an integer, too many jobs, or a body too large.
    """
    if len(body) > MAX_MESSAGE_BODY_BYTES:
        raise MalformedMessage(f"message body is {len(body):,} characters; not a doorbell")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"message body is not JSON: {body[:100]!r}") from exc
    if not isinstance(data, dict) or "v" not in data:
        raise MalformedMessage(f"message body has the wrong shape: {body[:100]!r}")
    if data["v"] == MESSAGE_VERSION and set(data) == {"v", "job", "d"}:
        entries: list[Any] = [[data["job"], data["d"], 0]]
    elif data["v"] == MULTI_MESSAGE_VERSION and set(data) == {"v", "jobs"}:
        entries = data["jobs"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_JOBS_PER_MESSAGE:
            raise MalformedMessage(f"message body has the wrong shape: {body[:100]!r}")
    elif data["v"] in (MESSAGE_VERSION, MULTI_MESSAGE_VERSION):
        raise MalformedMessage(f"message body has the wrong shape: {body[:100]!r}")
    else:
        raise MalformedMessage(f"message version {data['v']!r} is not supported")
    bells: list[Doorbell] = []
    for entry in entries:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and type(entry[2]) is int  # bool is an int subclass, and not a priority
        ):
            raise MalformedMessage(f"message body has the wrong shape: {body[:100]!r}")
        try:
            bells.append(
                Doorbell(
                    job_id=uuid.UUID(str(entry[0])),
                    dispatch_token=uuid.UUID(str(entry[1])),
                    priority=entry[2],
                )
            )
        except ValueError as exc:
            raise MalformedMessage(f"message body has an invalid id: {body[:100]!r}") from exc
    return bells

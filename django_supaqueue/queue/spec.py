"""What an enqueue call asks for, checked before anything is written."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from .. import conf
from ..exceptions import InvalidOption, InvalidPayload
from ..models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    Job,
    Queue,
)
from ..models import queue_name_validator as _queue_name_validator
from .storable import INT_MAX, LONG_DIGITS, json_refusal, text_refusal


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidOption(f"priority must be an integer, not {priority!r}.")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidOption(
            f"priority {priority} is out of range: use {PRIORITY_MIN}..{PRIORITY_MAX} (higher runs first)."
        )
    return priority


def check_max_attempts(max_attempts: int) -> int:
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= INT_MAX
    ):
        raise InvalidOption(f"max_attempts must be a whole number from 1 to {INT_MAX}, not {max_attempts!r}.")
    return max_attempts


#: Queue names already found valid: enqueue_many checks each row's name once, not 20,000 times.
_VALID_QUEUE_NAMES: set[str] = set()


def check_queue_name(name: str) -> str:
    if isinstance(name, str) and name in _VALID_QUEUE_NAMES:
        return name
    if not isinstance(name, str) or not name or len(name) > 100:
        raise InvalidOption(f"queue must be a non-empty name of at most 100 characters, not {name!r}.")
    try:
        _queue_name_validator(name)
    except Exception:
        raise InvalidOption(
            f"queue name {name!r} is not valid: use letters, digits, '_', '.', ':' and '-'."
        ) from None
    if len(_VALID_QUEUE_NAMES) < 10_000:
        _VALID_QUEUE_NAMES.add(name)
    return name


def check_http_method(method: str) -> str:
    """An HTTP call's method, in upper case: one a queue could have, so that the endpoint sees no surprise."""
    methods = Queue.HTTPMethod.values
    if isinstance(method, str) and method.upper() in methods:
        return method.upper()
    raise InvalidOption(
        f"method must be {', '.join(methods[:-1])} or {methods[-1]} (or left out for the queue's), "
        f"not {method!r}."
    )


def check_serial_group(group: str | None) -> str | None:
    if group is not None and (not isinstance(group, str) or not group or len(group) > 255):
        raise InvalidOption(
            f"serial_group must be a non-empty string of at most 255 characters, not {group!r}."
        )
    return check_text(group, "serial_group")


def check_run_at(run_at: datetime | timedelta | None) -> datetime | timedelta | None:
    """``run_at`` checked; a timedelta stays one, for the statement to add to the database's now().

    Adding it to this host's clock would write a run_at as far off as the clock is
    (minutes, on a host without NTP); every host compares run_at with now().
    The local clock only checks that the sum is a date there is.
    """
    if run_at is None:
        return None
    if isinstance(run_at, timedelta):
        try:
            timezone.now() + run_at
            return run_at
        except OverflowError:
            raise InvalidOption(f"run_at {run_at!r} from now is past the last date there is.") from None
    if not isinstance(run_at, datetime):
        raise InvalidOption(f"run_at must be a datetime or timedelta, not {run_at!r}.")
    try:
        if timezone.is_naive(run_at):
            run_at = timezone.make_aware(run_at)
        run_at.astimezone(UTC)  # what the job is read back in: year 1 to 9999
    except OverflowError:
        raise InvalidOption(f"run_at {run_at.isoformat()} is before year 1 or after 9999 in UTC.") from None
    return run_at


def split_run_at(run_at: datetime | timedelta | None) -> dict[str, datetime | timedelta | None]:
    """A checked run_at as the statements bind it: ``run_at`` (a moment) or ``run_in`` (a delay)."""
    if isinstance(run_at, timedelta):
        return {"run_at": None, "run_in": run_at}
    return {"run_at": run_at, "run_in": None}


def check_key(key: str | None) -> str | None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > 255):
        raise InvalidOption(f"key must be a non-empty string of at most 255 characters, not {key!r}.")
    return check_text(key, "key")


def check_tenant_id(tenant_id: str | None) -> str | None:
    if tenant_id is not None and (not isinstance(tenant_id, str) or not tenant_id or len(tenant_id) > 255):
        raise InvalidOption(
            f"tenant_id must be a non-empty string of at most 255 characters, not {tenant_id!r}."
        )
    return check_text(tenant_id, "tenant_id")


_LEAVE_IT_OUT = "Leave it out, or encode binary data (base64, for one)."


def check_text(text: str | None, what: str) -> str | None:
    """Refuse a string PostgreSQL cannot store (NUL, a lone surrogate), naming the option it is."""
    why = None if text is None else text_refusal(text)
    if why is not None:
        raise InvalidOption(f"{what} {text!r} cannot be stored: {why}. {_LEAVE_IT_OUT}")
    return text


def payload_text(payload: Any, args_bytes: int = 2) -> str:
    """A payload (keyword arguments) as JSON text, refused if it is not an object of them or too big."""
    if not isinstance(payload, dict):
        raise InvalidPayload(
            f"payload must be a JSON object (a dict of keyword arguments), not {type(payload).__name__}."
        )
    if not all(map(_is_str, payload)):
        raise InvalidPayload("payload keys must be strings (they are keyword argument names).")
    text = encode_json(payload, "payload")
    limit = conf.get("MAX_PAYLOAD_BYTES")
    if limit and len(text) + args_bytes > limit:
        raise InvalidPayload(
            f"payload is {len(text) + args_bytes} bytes of JSON, over SUPAQUEUE['MAX_PAYLOAD_BYTES'] "
            f"({limit}): store large data elsewhere (a model, a file) and pass its id."
        )
    return text


def payload_texts(payloads: Sequence[Any]) -> list[str]:
    """payload_text of each payload, at a third of the cost when every payload passes.

    At 20,000 payloads the calls and checks per payload cost three times the
    encoding. The checks that can be made once for all of them (objects,
    string keys, no escape or long number jsonb might refuse, the longest within
    MAX_PAYLOAD_BYTES) are; when one fails, each payload goes through
    payload_text, so the refusal is the one a single enqueue would give.
    """
    texts = _texts_if_all_pass(payloads)
    return texts if texts is not None else [payload_text(p) for p in payloads]


def _texts_if_all_pass(payloads: Sequence[Any]) -> list[str] | None:
    """The payloads' JSON texts, or None when a batch check fails (payload_texts says which)."""
    if (
        _C_ENCODE is None
        or not all(map(_is_dict, payloads))
        or not all(map(_is_str, itertools.chain.from_iterable(payloads)))
    ):
        return None
    encode, join = _C_ENCODE, "".join
    try:
        texts = [join(encode(p, 0)) for p in payloads]
    except (TypeError, ValueError, RecursionError):
        return None
    longest = max(map(len, texts), default=0)
    limit = conf.get("MAX_PAYLOAD_BYTES")
    if longest >= LONG_DIGITS or (limit and longest + 2 > limit) or "\\u" in "".join(texts):
        return None
    return texts


#: One encoder for every payload: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
#: _JSON's C encoder, made once: JSONEncoder.encode makes it again for every value, which
#: was half the cost of encoding enqueue_many's payloads. Without a circular-reference
#: check (a self-containing payload ends in RecursionError instead), so threads can share it.
_C_ENCODE = (
    json.encoder.c_make_encoder(
        None, _JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if json.encoder.c_make_encoder is not None
    else None
)
_is_str = str.__instancecheck__
_is_dict = dict.__instancecheck__


def _encode(value: Any) -> str:
    if _C_ENCODE is None or isinstance(value, str):
        return _JSON.encode(value)
    return "".join(_C_ENCODE(value, 0))


def encode_json(value: Any, what: str) -> str:
    """``value`` as JSON text, refused if it is not JSON or jsonb would not store it.

    The encoder writes ASCII and no NaN, and its floats have short exponents,
    so jsonb could only refuse an escape (NUL, a lone surrogate) or a very
    long int (in a long text): looking for those two costs nothing, so
    20,000 payloads of enqueue_many are not parsed again.
    """
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(
            f"{what} must be JSON-serialisable (dicts, lists, strings, numbers, booleans, None): {exc}"
        ) from None
    why = json_refusal(text) if "\\u" in text or len(text) >= LONG_DIGITS else None
    if why is not None:
        raise InvalidPayload(f"{what} cannot be stored in PostgreSQL's jsonb: {why}. {_LEAVE_IT_OUT}")
    return text


@dataclasses.dataclass
class JobSpec:
    """A job to write, as the caller asked for it (None = fall through to defaults)."""

    task_name: str
    payload: dict[str, Any]
    args: list[Any] = dataclasses.field(default_factory=list)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | timedelta | None = None
    key: str | None = None
    max_attempts: int | None = None
    http_path: str = ""
    http_method: str = ""  # an HTTP call's own method; "" = its queue's
    owner_id: int | None = None
    tenant_id: str | None = None
    key_mode: str = "dedupe"
    #: Existing jobs (ids) or earlier specs of the same enqueue_jobs() call.
    depends_on: Sequence[int | JobSpec] = ()
    on_dependency_failure: str | None = None
    serial_group: str | None = None

    def validated(self) -> Row:
        check_key(self.key)
        check_text(self.http_path, "path")
        check_tenant_id(self.tenant_id)
        if self.key_mode not in KEY_MODES:
            raise InvalidOption(f"key_mode must be one of {', '.join(KEY_MODES)}, not {self.key_mode!r}.")
        if self.key_mode != "dedupe" and self.key is None:
            raise InvalidOption(
                f"key_mode={self.key_mode!r} needs a key: it says what to do when the key exists."
            )
        if self.on_dependency_failure is not None and self.on_dependency_failure not in DEPENDENCY_POLICIES:
            raise InvalidOption(
                f"on_dependency_failure must be one of {', '.join(DEPENDENCY_POLICIES)}, "
                f"not {self.on_dependency_failure!r}."
            )
        check_serial_group(self.serial_group)
        args = encode_json(list(self.args), "args") if self.args else "[]"
        payload = payload_text(self.payload, len(args))
        return Row(
            queue=check_queue_name(self.queue or conf.get("DEFAULT_QUEUE")),
            task_name=self.task_name,
            payload=payload,
            args=args,
            priority=None if self.priority is None else check_priority(self.priority),
            **split_run_at(check_run_at(self.run_at)),
            max_attempts=None if self.max_attempts is None else check_max_attempts(self.max_attempts),
            key=self.key,
            spec=self,
        )


@dataclasses.dataclass
class Row:
    """A JobSpec checked and encoded: the values the enqueue statements bind (None: the queue's default)."""

    queue: str
    task_name: str
    payload: str
    args: str
    priority: int | None
    run_at: datetime | None
    max_attempts: int | None
    key: str | None
    spec: JobSpec
    trace: str | None = None  # JSON text of the enqueuer's trace context (tracing.py)
    run_in: timedelta | None = None  # a run_at given as a delay: added to the database's now()


#: What an enqueue does when a pending job already holds its key: "dedupe" keeps
#: that job and returns it; "replace" (debounce) gives it the new arguments,
#: priority, attempts and run_at; "preserve_run_at" (throttle) all but run_at.
KEY_MODES = ("dedupe", "replace", "preserve_run_at")
#: What a dependent does when a dependency fails for good or is cancelled.
DEPENDENCY_POLICIES = tuple(Job.OnDependencyFailure.values)

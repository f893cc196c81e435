"""The secrets of HTTP queues: where each may be sent, and keeping it out of what is kept.

``SUPAQUEUE["HTTP_SECRETS"]`` maps an alias to a secret: a plain string, or
``{"value": ..., "hosts": ["fn.example.com"]}``. A queue row names only the alias. A bound alias is
sent to its hosts and nowhere else, because whoever may change a queue could otherwise point it at
a server of their own and read the secret from the request. And since an endpoint can echo what
it was sent, every form of the secret a call sent is replaced by ``[secret]`` in whatever is stored
or logged about the call.

It imports nothing of the app but ``conf``, so the validators under the models can look up the hosts
an alias is bound to, and the HTTP handler redacts with the same entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import conf

REDACTED = "[secret]"
#: The loggers of the HTTP libraries: at INFO and DEBUG they write the status text and the response
#: headers, which an endpoint can fill with what it was sent.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "aiohttp.client",
    "aiohttp.internal",
)
# Visible ASCII with inner spaces: what a header carries as is. A secret read from a file with its
# newline would otherwise be refused by the HTTP library in an error message that quotes it.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_SHAPE = "a secret string, or {'value': secret, 'hosts': ['fn.example.com', ...]}"


@dataclasses.dataclass(frozen=True, slots=True)
class Secret:
    alias: str
    value: str
    hosts: frozenset[str]  # empty: not bound, sent wherever its queue points

    def __repr__(self) -> str:  # a traceback's locals or a debugger must not show the value
        return f"Secret(alias={self.alias!r}, hosts={sorted(self.hosts)!r})"

    def allows(self, host: str) -> bool:
        return not self.hosts or normal_host(host) in self.hosts


def normal_host(host: str) -> str:
    """A host as URLs compare it: lower case, no brackets around IPv6, no root dot."""
    return host.strip().strip("[]").lower().rstrip(".")


def get(alias: str) -> Secret:
    """The secret an alias names: LookupError when there is none, ImproperlyConfigured when malformed."""
    entries = conf.get("HTTP_SECRETS")
    if not isinstance(entries, dict) or alias not in entries:
        raise LookupError(f"secret alias {alias!r} is not in SUPAQUEUE['HTTP_SECRETS']")
    return _entry(alias, entries[alias])


def configured() -> dict[str, Secret]:
    """Every entry of SUPAQUEUE['HTTP_SECRETS'], checked: ImproperlyConfigured names a bad one."""
    entries = conf.get("HTTP_SECRETS")
    if not isinstance(entries, dict):
        raise ImproperlyConfigured(f"SUPAQUEUE['HTTP_SECRETS'] must be a dict of alias -> {_SHAPE}.")
    return {alias: _entry(alias, entry) for alias, entry in entries.items()}


def _entry(alias: str, entry: Any) -> Secret:
    where = f"SUPAQUEUE['HTTP_SECRETS'][{alias!r}]"
    hosts: Any = ()
    value = entry
    if isinstance(entry, dict):
        if set(entry) != {"value", "hosts"}:
            raise ImproperlyConfigured(f"{where} must be {_SHAPE}; it has the keys {sorted(entry)}.")
        value, hosts = entry["value"], entry["hosts"]
        if (
            not isinstance(hosts, list | tuple)
            or not hosts
            or not all(isinstance(h, str) and normal_host(h) for h in hosts)
        ):
            raise ImproperlyConfigured(
                f"{where}['hosts'] must be a non-empty list of the host names it may be sent to."
            )
    if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
        raise ImproperlyConfigured(
            f"{where} must be {_SHAPE}, the secret made of visible ASCII characters and inner spaces "
            "(no newline around it): it is sent in an HTTP header."
        )
    return Secret(alias, value, frozenset(normal_host(h) for h in hosts))


# --------------------------------------------------------------------------
# Redaction: what a call stores or logs never holds what it sent
# --------------------------------------------------------------------------


def _forms(values: Iterable[str]) -> list[str]:
    """Each secret as text shows it: as is, escaped in JSON, and inside a repr (str or bytes).

    Longest first, so that a form containing another is replaced whole.
    """
    forms = set()
    for value in values:
        if value:
            forms |= {value, json.dumps(value)[1:-1], repr(value)[1:-1], repr(value.encode())[2:-1]}
    return sorted(forms, key=len, reverse=True)


def redact(text: str, values: Iterable[str]) -> str:
    for form in _forms(values):
        text = text.replace(form, REDACTED)
    return text


def redact_json(value: Any, values: Iterable[str]) -> Any:
    """A parsed JSON value with the secrets replaced in every string, keys included.

    Redacting the raw text first is not enough: JSON may spell a secret with escapes.
    """
    values = tuple(values)
    if isinstance(value, str):
        return redact(value, values)
    if isinstance(value, list):
        return [redact_json(v, values) for v in value]
    if isinstance(value, dict):
        return {redact(k, values): redact_json(v, values) for k, v in value.items()}
    return value


def drop_cut_secret(body: bytes, values: Iterable[str]) -> bytes:
    """A body cut at a size limit, less the start of a secret the cut went through."""
    longest = 0
    for form in _forms(values):
        encoded = form.encode()
        for size in range(min(len(encoded) - 1, len(body)), longest, -1):
            if body.endswith(encoded[:size]):
                longest = size
                break
    return body[: len(body) - longest]


class RedactSecrets(logging.Filter):
    """Replaces every configured secret in the records of a logger (see LIBRARY_LOGGERS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = _all_values()
        if values:
            message = record.getMessage()
            redacted = redact(message, values)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


def _all_values() -> list[str]:
    """The secret strings of SUPAQUEUE['HTTP_SECRETS'], skipping malformed entries (a log filter
    must not raise; check E007 reports them)."""
    entries = conf.get("HTTP_SECRETS")
    if not isinstance(entries, dict):
        return []
    values = (e.get("value") if isinstance(e, dict) else e for e in entries.values())
    return [v for v in values if isinstance(v, str) and v]


def redact_library_logs() -> None:
    """Attach RedactSecrets to the HTTP libraries' loggers, once."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())

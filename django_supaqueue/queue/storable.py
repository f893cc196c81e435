"""What PostgreSQL can store, and Python read back: the values every write of the queue checks.

PostgreSQL's text cannot hold NUL (U+0000); psycopg cannot encode a lone
surrogate (U+D800..U+DFFF) as UTF-8; jsonb refuses both as JSON escapes
(``\\u0000``, an unpaired ``\\ud800``), refuses NaN and Infinity, and refuses
numbers past numeric's range. Any of them fails the whole statement that
carries it, and with it every other row of that statement, so the queue looks
before it binds: enqueue refuses such values with a clear error, and an
attempt's outcome is made storable (outcomes.storable).

The checks cost next to nothing where nothing is wrong, which is nearly
always: JSON text is parsed only when a quick look finds something jsonb
might refuse. The JSON text checked is taken to be as json.dumps writes it;
text that is not JSON at all is a bug of its writer, not data, and is not
looked for.
"""

from __future__ import annotations

import decimal
import json
import re
import sys
from typing import Any

#: A lone surrogate: a code point no UTF-8 encoder writes.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

#: A number that may be out of numeric's range, or too long for Python to read
#: back, has a long exponent or a long run of digits; shorter ones always fit.
_LONG_EXPONENT = re.compile(r"[eE][-+]?\d{4}")
LONG_DIGITS = 4000
_LONG_RUN_OF_DIGITS = re.compile(rf"(?<!\d)\d{{{LONG_DIGITS}}}")

#: numeric's limits: digits before the decimal point, and after it.
_NUMERIC_WHOLE_DIGITS = 131072
_NUMERIC_FRACTION_DIGITS = 16383

#: The largest values of PostgreSQL's integer columns.
INT_MAX = 2**31 - 1
SMALLINT_MAX = 2**15 - 1


class _Refused(ValueError):
    """Raised while parsing, with the reason jsonb would refuse the text."""


def text_refusal(text: str) -> str | None:
    """Why PostgreSQL's text could not hold ``text`` (NUL or a lone surrogate), or None if it could."""
    if "\x00" in text:
        return "it contains NUL (\\u0000), which PostgreSQL's text cannot hold"
    surrogate = None if text.isascii() else _SURROGATE.search(text)
    if surrogate is not None:
        escape = surrogate.group().encode("utf-8", "backslashreplace").decode()
        return f"it contains a lone surrogate ({escape}), which UTF-8 cannot encode"
    return None


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates written as their escapes (``\\x00``, ``\\ud800``).

    For messages and tracebacks, whose reader is better served by the escape
    than by a replacement character: it shows what the string held.
    """
    if text_refusal(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def json_refusal(text: str) -> str | None:
    """Why jsonb would refuse this JSON text, or Python fail to read it back; None when neither would."""
    strings = "\\u" in text or "\x00" in text or not text.isascii()
    numbers = (
        "NaN" in text
        or "Infinity" in text
        or _LONG_EXPONENT.search(text) is not None
        or (len(text) >= LONG_DIGITS and _LONG_RUN_OF_DIGITS.search(text) is not None)
    )
    if not (strings or numbers):
        return None
    hooks = {"parse_constant": _constant, "parse_int": _number, "parse_float": _number} if numbers else {}
    try:
        value = json.loads(text, **hooks)
    except _Refused as exc:
        return str(exc)
    except RecursionError:
        return "it is nested too deeply to be read back"
    except ValueError as exc:
        return f"it is not valid JSON ({exc})"
    return _strings_refusal(value) if strings else None


def _constant(name: str) -> Any:
    raise _Refused(f"it holds {name}, which is not JSON")


def _number(literal: str) -> None:
    """Refuse a number numeric cannot hold, or whose digits Python would not turn into an int."""
    _, digits, exponent = decimal.Decimal(literal).as_tuple()
    assert isinstance(exponent, int)  # JSON has no NaN or Infinity literals; _constant takes those
    whole = len(digits) + exponent if any(digits) else 0
    readable = min(_NUMERIC_WHOLE_DIGITS, sys.get_int_max_str_digits() or _NUMERIC_WHOLE_DIGITS)
    if whole > readable or -exponent > _NUMERIC_FRACTION_DIGITS:
        shown = literal if len(literal) <= 40 else f"{literal[:20]}...{literal[-10:]}"
        raise _Refused(
            f"it holds the number {shown}, beyond what jsonb's numeric stores and Python reads back: "
            f"at most {readable} digits before the decimal point and {_NUMERIC_FRACTION_DIGITS} after it"
        )


def _strings_refusal(value: Any) -> str | None:
    """Why a string (or object key) in a decoded JSON value could not be stored, or None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            why = text_refusal(item)
            if why is not None:
                return "a string in " + why
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None

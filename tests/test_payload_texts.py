"""enqueue_many encodes its payloads together: the same texts, and the same refusals, as one at a time.

payload_texts checks once what it can for the whole batch and falls back to
payload_text per payload when a check fails, so a batch is accepted exactly
when each of its payloads would be, and refused with the refusal of the first
payload that fails.
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_supaqueue.exceptions import InvalidPayload
from django_supaqueue.queue.spec import payload_text, payload_texts

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**5000), max_value=10**5000)
    | st.floats()
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_payloads = st.dictionaries(st.text(max_size=8), _values, max_size=5)
_items = _payloads | st.integers() | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2)


def one_at_a_time(payloads):
    try:
        return [payload_text(p) for p in payloads], None
    except InvalidPayload as exc:
        return None, str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(_items, max_size=8))
def test_a_batch_is_encoded_and_refused_as_each_payload_would_be(payloads):
    texts, refusal = one_at_a_time(payloads)
    if refusal is None:
        assert payload_texts(payloads) == texts
    else:
        with pytest.raises(InvalidPayload) as exc:
            payload_texts(payloads)
        assert str(exc.value) == refusal


@pytest.mark.parametrize(
    "bad, why",
    [
        ([1, 2], "must be a JSON object"),
        ({1: "a"}, "keys must be strings"),
        ({"x": math.nan}, "JSON-serialisable"),
        ({"x": {1, 2}}, "JSON-serialisable"),
        ({"x": "a\x00b"}, "NUL"),
        ({"x": "\ud800"}, "lone surrogate"),
        ({"x": 10**5000}, "integer string conversion"),
    ],
    ids=["not a dict", "int key", "NaN", "a set", "NUL", "lone surrogate", "too many digits"],
)
def test_one_bad_payload_among_good_ones_is_refused_with_its_own_reason(bad, why):
    payloads = [{"i": i} for i in range(50)] + [bad] + [{"i": 0}]
    with pytest.raises(InvalidPayload, match=why):
        payload_texts(payloads)


def test_a_payload_over_max_payload_bytes_is_refused_though_the_rest_fit(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "MAX_PAYLOAD_BYTES": 100}
    payloads = [{"i": i} for i in range(50)] + [{"blob": "x" * 100}]
    with pytest.raises(InvalidPayload, match="MAX_PAYLOAD_BYTES"):
        payload_texts(payloads)
    assert payload_texts(payloads[:50]) == [payload_text(p) for p in payloads[:50]]


def test_a_long_number_jsonb_takes_is_encoded_as_one_at_a_time():
    payloads = [{"i": i} for i in range(50)] + [{"n": 10**4100}]
    assert payload_texts(payloads) == [payload_text(p) for p in payloads]

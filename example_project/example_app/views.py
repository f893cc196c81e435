"""The endpoint the demo's HTTP queue calls: a pretend parcel carrier, served by the example itself.

It stands in for a partner's API (a Supabase edge function, a shop's webhook)
so that the demo shows an HTTP queue end to end without reaching the internet.
A worker POSTs a JSON object; the view books the parcel and answers with JSON.

Calls must carry the shared secret in ``SECRET_HEADER``. The worker adds it
from ``SUPAQUEUE["HTTP_SECRETS"][SECRET_ALIAS]`` (the queue row names only the
alias) and this view reads the same entry, so the value lives in the
environment alone and never in a job, a result or a log line.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from django_supaqueue import secrets

#: The entry of SUPAQUEUE["HTTP_SECRETS"] that the webhook queue names and this view checks.
SECRET_ALIAS = "demo-webhook"
#: The header that carries the secret (the queue's ``http_secret_header``).
SECRET_HEADER = "X-Webhook-Secret"


@csrf_exempt  # called by workers, not by a browser's form: the shared secret is what authenticates
@require_POST
def webhook(request: HttpRequest) -> JsonResponse:
    """Book a parcel: ``{"order": "DEMO-1", "parcel": 1}`` in, its tracking code out."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    parcel = _parcel(request.body)
    if parcel is None:
        return JsonResponse(
            {"error": 'send a JSON object with an "order" string and a "parcel" number'}, status=400
        )
    order, number = parcel
    return JsonResponse({"order": order, "parcel": number, "tracking": f"TRK-{order}-{number}"})


def _refusal(request: HttpRequest) -> JsonResponse | None:
    """401 without the secret, 403 with a wrong one (or none configured); None when it matches.

    The comparison takes the same time whatever the sent value, so response
    times cannot reveal how much of a guess was right.
    """
    sent = request.headers.get(SECRET_HEADER)
    if not sent:
        return JsonResponse({"error": f"missing {SECRET_HEADER} header"}, status=401)
    try:
        expected = secrets.get(SECRET_ALIAS).value
    except LookupError:
        expected = ""
    if not expected or not constant_time_compare(sent, expected):
        return JsonResponse({"error": f"wrong {SECRET_HEADER}"}, status=403)
    return None


def _parcel(body: bytes) -> tuple[str, int] | None:
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    order, number = data.get("order"), data.get("parcel")
    if not isinstance(order, str) or not order or isinstance(number, bool) or not isinstance(number, int):
        return None
    return order, number

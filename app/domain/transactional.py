"""Transactional email: the rules of one message sent on request through the API (receipts,
password resets), see docs/ARCHITECTURE.md, "Transactional email".

Who may receive it is app.domain.eligibility's rule with the email type's `transactional` flag;
this module adds what is particular to a request: a recipient on the suppression list (erased
addresses), the idempotency key, the caller's merge data, and the words of each refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from app.domain import figures
from app.domain.responses import Response

IDEMPOTENCY_KEY_MAX = 200
DATA_KEY_MAX = 100
DATA_MAX_KEYS = 200
# Variables every message has already: the caller's data cannot replace them.
RESERVED_VARIABLES = frozenset({"name", "email", "fields", "unsubscribe_url", "preferences_url"})


class Refusal(StrEnum):
    """Why a transactional email is not sent; the value is what the API reports."""

    SUPPRESSED = "suppressed"
    DO_NOT_EMAIL = "do_not_email"
    TYPE_UNSUBSCRIBED = "unsubscribed_from_type"
    INVALID_ADDRESS = "invalid_address"
    INACTIVE = "inactive"


_BY_RESPONSE = {
    Response.DO_NOT_EMAIL: Refusal.DO_NOT_EMAIL,
    Response.TYPE_UNSUBSCRIBED: Refusal.TYPE_UNSUBSCRIBED,
    Response.INVALID_ADDRESS: Refusal.INVALID_ADDRESS,
    Response.INACTIVE: Refusal.INACTIVE,
}


def refusal(verdict: Response | None, *, suppressed: bool) -> Refusal | None:
    """The refusal for a recipient: the suppression list first, then the eligibility verdict
    (app.domain.eligibility.check, which already knows whether the type is transactional)."""
    if suppressed:
        return Refusal.SUPPRESSED
    if verdict is None:
        return None
    return _BY_RESPONSE.get(verdict, Refusal.INVALID_ADDRESS)


def explain(refusal: Refusal, *, address: str, type_name: str = "", reason: str = "",
            inactivity_days: int = 0) -> str:
    """The refusal in a sentence for the caller."""
    if refusal is Refusal.SUPPRESSED:
        return f"{address} was erased and is on the suppression list: it is never mailed."
    if refusal is Refusal.DO_NOT_EMAIL:
        why = f" ({reason})" if reason else ""
        return (f"{address} is marked do not email{why}; no email, transactional or not, "
                "is sent to it.")
    if refusal is Refusal.TYPE_UNSUBSCRIBED:
        return (f"{address} left the email type {type_name!r}. Only an email type marked "
                "transactional in Settings reaches contacts who left it.")
    if refusal is Refusal.INACTIVE:
        return (f"{address} has had no transaction for {inactivity_days} days, so mail to it is "
                "held back; an email type marked transactional is not.")
    return f"{address} cannot receive mail: {reason or 'the address is invalid'}."


def key_problem(key: str) -> str | None:
    """Why an idempotency key cannot be used, or None: 1 to 200 printable ASCII characters."""
    if not key:
        return "is empty"
    if len(key) > IDEMPOTENCY_KEY_MAX:
        return f"is longer than {IDEMPOTENCY_KEY_MAX} characters"
    if not all("!" <= ch <= "~" for ch in key):
        return "may hold only printable ASCII characters, without spaces"
    return None


def data_problem(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """(key, why) for the first merge variable that cannot be used, or None."""
    if len(data) > DATA_MAX_KEYS:
        return "", f"holds more than {DATA_MAX_KEYS} variables"
    for key in data:
        if not key or len(key) > DATA_KEY_MAX:
            return key, f"a variable's name must have 1 to {DATA_KEY_MAX} characters"
        if key in RESERVED_VARIABLES:
            return key, f"{key!r} is set by Sendboard for every message and cannot be given"
        if _has_nul(key) or _has_nul(data[key]):
            return key, "must not contain a NUL character"
    return None


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 50:
        return False
    if isinstance(value, Mapping):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


def status_of(response: Response) -> str:
    """What the API calls a message's state: queued (not handed off yet), sent (it left
    Sendboard, whatever happened next) or not_sent."""
    kind = figures.group(response)
    return "queued" if kind == "waiting" else kind

"""Response events: their vocabulary, how each one folds into a recipient and the mailing's
counters, and what it does to the contact (docs/ARCHITECTURE.md, "Responses").

Pure rules; `app.services.responses` applies them to the database in one transaction per batch.

Event kinds:

- a response an event may ask for: sent, delivered, soft_bounce, hard_bounce, blocked, dropped,
  spam, unsubscribed, delivery_error, unknown (the not-sent responses and Planned belong to the
  sender alone);
- ``open`` and ``click`` (counted every time; a machine's only proves delivery);
- timeline entries that change no response: ``deferred`` (retried later), ``resubscribed``
  (changes the contact only), ``auto_reply``, ``delivered_report`` and ``reclassified``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from app.domain import figures
from app.domain.bounces import REFUSAL_REASONS, Reason
from app.domain.responses import NOT_SENT, Response, decide

OPEN = "open"
CLICK = "click"
DEFERRED = "deferred"
RESUBSCRIBED = "resubscribed"
AUTO_REPLY = "auto_reply"  # a vacation or other automatic answer (RFC 3834)
DELIVERED_REPORT = "delivered_report"  # a delivery report saying the message arrived
RECLASSIFIED = "reclassified"  # a bounce read again by a newer classifier
TIMELINE_ONLY = frozenset({DEFERRED, RESUBSCRIBED, AUTO_REPLY, DELIVERED_REPORT, RECLASSIFIED})
EVENT_RESPONSES = frozenset(r.value for r in Response) - {r.value for r in NOT_SENT} - {
    Response.PLANNED.value
}
KINDS = EVENT_RESPONSES | {OPEN, CLICK} | TIMELINE_ONLY
# How a timeline names the kinds that are not responses (responses use their own labels).
LABELS: dict[str, str] = {
    OPEN: "Opened",
    CLICK: "Clicked",
    DEFERRED: "Deferred by the receiving server",
    RESUBSCRIBED: "Subscribed again",
    AUTO_REPLY: "Automatic reply (not a bounce)",
    DELIVERED_REPORT: "Delivery report: delivered",
    RECLASSIFIED: "Bounce read again",
}

# Responses that prove the message reached the mailbox (the "delivered_unique" counter).
PROVES_DELIVERY = frozenset({
    Response.DELIVERED, Response.OPENED, Response.CLICKED, Response.SPAM, Response.UNSUBSCRIBED,
})
# Counters of recipients whose response *became* one of these (they only grow).
BECAME: dict[Response, str] = {
    Response.UNSUBSCRIBED: "unsubscribed",
    Response.SPAM: "complaints",
    Response.HARD_BOUNCE: "hard_bounces",
    Response.SOFT_BOUNCE: "soft_bounces",
    Response.BLOCKED: "blocked",
    Response.DROPPED: "dropped",
}
_RESPONSE_COUNTERS = {r: figures.response_counter(r) for r in Response}


def incoming_response(kind: str, machine: bool = False) -> Response | None:
    """The response an event asks for; None for the kinds that only go to the timeline."""
    if kind in TIMELINE_ONLY:
        return None
    if kind == OPEN or kind == CLICK:
        if machine:
            return Response.DELIVERED  # a proxy or scanner proves delivery, not interest
        return Response.OPENED if kind == OPEN else Response.CLICKED
    return Response(kind)


def hour_bucket(moment: datetime) -> str:
    """The UTC hour an activity counter is kept under, e.g. "2026-11-23T10"."""
    return moment.astimezone(UTC).isoformat()[:13]


@dataclass(slots=True)
class Tally:
    """What the rules need to know of a recipient: its response and its open/click counts."""

    response: Response
    crash_unknown: bool = False
    opens: int = 0
    clicks: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0


def count_activity(tally: Tally, kind: str, machine: bool, deltas: dict[str, int],
                   hour_counter: str) -> None:
    """Grow the recipient's open or click counts and the mailing's counters for one event.

    `hour_counter` is the per-hour activity counter of the event ("opens@2026-11-23T10").
    """
    if kind == OPEN:
        if tally.opens == 0:
            _add(deltas, figures.OPENED_UNIQUE)
        if not machine and tally.opens == tally.machine_opens:
            _add(deltas, figures.OPENED_UNIQUE_HUMAN)
        tally.opens += 1
        _add(deltas, figures.OPENS)
        _add(deltas, hour_counter)
        if machine:
            tally.machine_opens += 1
            _add(deltas, figures.OPENS_MACHINE)
    elif kind == CLICK:
        if tally.clicks == 0:
            _add(deltas, figures.CLICKED_UNIQUE)
        if not machine and tally.clicks == tally.machine_clicks:
            _add(deltas, figures.CLICKED_UNIQUE_HUMAN)
        tally.clicks += 1
        _add(deltas, figures.CLICKS)
        _add(deltas, hour_counter)
        if machine:
            tally.machine_clicks += 1
            _add(deltas, figures.CLICKS_MACHINE)


def move_response(tally: Tally, kind: str, machine: bool, deltas: dict[str, int]) -> bool:
    """Apply the response an event asks for, as `decide` allows; True when it changed.

    The counters move with it: the old response's count down, the new one's up, and the
    cumulative "became" and "delivered" counters when they apply.
    """
    incoming = incoming_response(kind, machine)
    if incoming is None:
        return False
    new = decide(tally.response, incoming, crash_unknown=tally.crash_unknown)
    if new is None:
        return False
    old = tally.response
    _add(deltas, _RESPONSE_COUNTERS[old], -1)
    _add(deltas, _RESPONSE_COUNTERS[new])
    became = BECAME.get(new)
    if became is not None:
        _add(deltas, became)
    if new in PROVES_DELIVERY and old not in PROVES_DELIVERY:
        _add(deltas, figures.DELIVERED_UNIQUE)
    tally.response = new
    tally.crash_unknown = False
    return True


def _add(deltas: dict[str, int], name: str, value: int = 1) -> None:
    deltas[name] = deltas.get(name, 0) + value


# ---------------------------------------------------------------- the contact


class ContactEffect(StrEnum):
    """What an event does to the contact behind the recipient."""

    NONE = "none"
    INVALID = "invalid"  # the address is permanently bad: invalid and do-not-email
    COMPLAINED = "complained"  # do-not-email, reason spam complaint
    UNSUBSCRIBED = "unsubscribed"  # do-not-email, reason unsubscribed
    TYPE_OPT_OUT = "type_opt_out"  # left one email type
    RESUBSCRIBED = "resubscribed"  # lifts an unsubscribe (never a bounce or a complaint)
    TYPE_OPT_IN = "type_opt_in"  # joins one email type again


def contact_effect(kind: str, *, applied: bool, scope: str = "all",
                   has_type: bool = False) -> ContactEffect:
    """The one table of what reaches the contact.

    - A hard bounce marks the address invalid only when it applied: a hard bounce after an open
      is a forwarding artefact, not proof that the address is dead.
    - Complaints and unsubscribes reach the contact even when the recipient's response is already
      final: a person who asks to leave is never mailed again.
    - Soft bounces, blocks, drops, delivery errors and unknowns never touch the contact: they say
      nothing permanent about the address (see `counts_toward_invalid` for repeated soft bounces).
    - `scope` "type" with an email type at hand acts on that type only.
    """
    per_type = scope == "type" and has_type
    if kind == Response.HARD_BOUNCE.value:
        return ContactEffect.INVALID if applied else ContactEffect.NONE
    if kind == Response.SPAM.value:
        return ContactEffect.COMPLAINED
    if kind == Response.UNSUBSCRIBED.value:
        return ContactEffect.TYPE_OPT_OUT if per_type else ContactEffect.UNSUBSCRIBED
    if kind == RESUBSCRIBED:
        return ContactEffect.TYPE_OPT_IN if per_type else ContactEffect.RESUBSCRIBED
    return ContactEffect.NONE


CONTACT_KINDS = frozenset({Response.HARD_BOUNCE.value, Response.SPAM.value,
                           Response.UNSUBSCRIBED.value, RESUBSCRIBED})

# ---------------------------------------------------------------- rules of time and repetition

NO_REPORT_HOURS = 48  # a message with no report after this is Delivered (or Unknown)
SOFT_BOUNCE_MAILINGS = 3  # soft bounces in this many mailings make the address invalid
# Soft bounces that say something about the mailbox itself (full, disabled, never reached);
# a refusal of the sender, the content or the sending IP, or a rate limit, says nothing of it.
_NOT_ABOUT_THE_ADDRESS = REFUSAL_REASONS | {Reason.RATE_LIMITED}


def counts_toward_invalid(reason: str | None) -> bool:
    """Whether a soft bounce with this reason counts toward the repeated-soft-bounce rule.

    A soft bounce with no recorded reason (from before reasons were kept) still counts.
    """
    if not reason:
        return True
    try:
        return Reason(reason) not in _NOT_ABOUT_THE_ADDRESS
    except ValueError:
        return True

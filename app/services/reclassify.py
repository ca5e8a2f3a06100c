"""Reading stored hard bounces again with the current classifier (`sendboard bounces reclassify`).

Every recipient whose response is Hard bounce is judged again from the evidence kept for it: the
status and diagnostic of the event that made it hard (``response_events.detail``), or the server's
reply at hand-off (``recipients.detail``, "550 5.1.1 ..."). When the classifier no longer finds the
address permanently bad, the recipient's response becomes Blocked or Soft bounce (with the mailing
counters moved in the same transaction), a ``reclassified`` entry records why on its timeline, and
its contact is made valid and mailable again unless something else still stands against it: an
unsubscribe, a spam complaint, or another hard bounce the classifier still confirms. See
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.domain.bounces import Reason, Verdict, classify, classify_reply
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Recipient, ResponseEvent
from app.services import totals
from app.services.responses import RECLASSIFIED

SOURCE = "reclassify"
# What our own hard-bounce effects write on a contact (app.services.responses, sending).
HARD_INVALID_REASONS = ("hard bounce", "hard bounce at hand-off")
HARD_DNE_REASON = "hard bounce"
_REPLY = re.compile(r"^\s*([245]\d\d)\b[\s\-]*(.*)$", re.S)
_COUNTER = {Response.HARD_BOUNCE: "hard_bounces", Response.SOFT_BOUNCE: "soft_bounces",
            Response.BLOCKED: "blocked"}


@dataclass
class Change:
    """A hard bounce the classifier no longer gives."""

    recipient_id: int
    mailing_id: int
    contact_id: int | None
    address: str
    new: Response
    verdict: Verdict
    evidence: str  # "event" (bounce mail, webhook) or "hand-off" (the SMTP reply)
    contact_restored: bool = False
    kept: list[str] = field(default_factory=list)  # why the contact stays flagged


@dataclass
class Outcome:
    checked: int = 0
    changes: list[Change] = field(default_factory=list)
    contacts_restored: int = 0
    applied: bool = False


def _evidence(recipient: Recipient,
              event: ResponseEvent | None) -> tuple[Verdict, str] | None:
    """The current verdict on the stored evidence, or None when nothing was kept to re-read."""
    if event is not None:
        detail: dict[str, Any] = event.detail or {}
        status = str(detail.get("status") or "")
        diagnostic = str(detail.get("diagnostic") or "")
        if not status and not diagnostic:
            return None  # the provider's own word, with nothing to read again
        verdict = classify(status or None, diagnostic, action="failed",
                           recipient=detail.get("final_recipient") or None)
        if verdict.reason is Reason.UNDEFINED and event.source != "dsn":
            return None  # a provider's permanent verdict stands where the reply says nothing
        return verdict, "event"
    match = _REPLY.match(recipient.detail or "")
    if match is None:
        return None
    return classify_reply(int(match.group(1)), match.group(2)), "hand-off"


def _hard_events(recipient_ids: list[int]) -> dict[int, ResponseEvent]:
    """The latest applied hard-bounce event of each recipient."""
    out: dict[int, ResponseEvent] = {}
    if not recipient_ids:
        return out
    rows = db.session.execute(
        select(ResponseEvent).where(ResponseEvent.recipient_id.in_(recipient_ids),
                                    ResponseEvent.kind == Response.HARD_BOUNCE.value,
                                    ResponseEvent.applied.is_(True))
        .order_by(ResponseEvent.occurred_at, ResponseEvent.id)
    ).scalars()
    for event in rows:
        out[event.recipient_id] = event
    return out


def _chunks(items: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def reclassify(*, apply: bool = False, now: datetime | None = None) -> Outcome:
    """Find (and with `apply`, correct) the hard bounces the classifier no longer gives."""
    now = now or datetime.now(UTC)
    outcome = Outcome(applied=apply)
    ids = list(db.session.execute(
        select(Recipient.id).where(Recipient.response == Response.HARD_BOUNCE.value)
        .order_by(Recipient.id)).scalars())
    still_hard: set[int] = set()  # contacts with a hard bounce the classifier confirms
    for chunk in _chunks(ids):
        recipients = db.session.execute(
            select(Recipient).where(Recipient.id.in_(chunk)).order_by(Recipient.id)).scalars()
        events = _hard_events(chunk)
        for recipient in recipients:
            outcome.checked += 1
            found = _evidence(recipient, events.get(recipient.id))
            new = found[0].response if found else Response.HARD_BOUNCE
            if found is None or new in (None, Response.HARD_BOUNCE):
                if recipient.contact_id is not None:
                    still_hard.add(recipient.contact_id)
                continue
            assert new is not None
            outcome.changes.append(Change(
                recipient.id, recipient.mailing_id, recipient.contact_id, recipient.address,
                new, found[0], found[1]))
    _judge_contacts(outcome.changes, still_hard)
    outcome.contacts_restored = len({c.contact_id for c in outcome.changes
                                     if c.contact_restored})
    if apply and outcome.changes:
        _apply(outcome.changes, now)  # the caller commits
    return outcome


def _judge_contacts(changes: list[Change], still_hard: set[int]) -> None:
    """Which contacts our hard bounces flagged, and whether anything else still flags them."""
    contact_ids = sorted({c.contact_id for c in changes if c.contact_id is not None})
    if not contact_ids:
        return
    contacts = {c.id: c for c in db.session.execute(
        select(Contact).where(Contact.id.in_(contact_ids))).scalars()}
    # Other evidence against a contact: its recipients' unsubscribes and complaints.
    others: dict[int, set[str]] = defaultdict(set)
    rows = db.session.execute(
        select(Recipient.contact_id, ResponseEvent.kind, ResponseEvent.detail)
        .join(ResponseEvent, ResponseEvent.recipient_id == Recipient.id)
        .where(Recipient.contact_id.in_(contact_ids),
               ResponseEvent.kind.in_([Response.SPAM.value, Response.UNSUBSCRIBED.value]))
    )
    for contact_id, kind, detail in rows:
        scope = (detail or {}).get("scope", "all") if isinstance(detail, dict) else "all"
        if kind == Response.SPAM.value:
            others[contact_id].add("spam complaint")
        elif scope == "all":
            others[contact_id].add("unsubscribed")
    for change in changes:
        contact = contacts.get(change.contact_id) if change.contact_id is not None else None
        if contact is None:
            continue
        flagged_by_us = (contact.invalid_reason in HARD_INVALID_REASONS
                         or contact.do_not_email_reason == HARD_DNE_REASON)
        if not flagged_by_us:
            if not contact.valid or contact.do_not_email:
                change.kept.append(contact.invalid_reason or contact.do_not_email_reason)
            continue
        if contact.id in still_hard:
            change.kept.append("another hard bounce")
            continue
        change.kept.extend(sorted(others.get(contact.id, ())))
        change.contact_restored = True


def _apply(changes: list[Change], now: datetime) -> None:
    deltas: dict[int, Counter[str]] = defaultdict(Counter)
    for change in changes:
        recipient = db.session.get(Recipient, change.recipient_id)
        if recipient is None or recipient.response != Response.HARD_BOUNCE.value:
            continue  # changed meanwhile
        recipient.response = change.new.value
        recipient.reason = change.verdict.reason.value
        recipient.response_at = now
        recipient.updated_at = now
        recipient.detail = (f"reclassified: {change.verdict.reason.value}; "
                            f"{change.verdict.diagnostic}")[:2000]
        d = deltas[change.mailing_id]
        d[totals.response_key(Response.HARD_BOUNCE)] -= 1
        d[totals.response_key(change.new)] += 1
        d[_COUNTER[Response.HARD_BOUNCE]] -= 1
        d[_COUNTER[change.new]] += 1
        detail: dict[str, Any] = {
            **change.verdict.detail(), "from": Response.HARD_BOUNCE.value,
            "to": change.new.value, "evidence": change.evidence,
            "contact_restored": change.contact_restored,
        }
        if change.kept:
            detail["contact_kept_because"] = ", ".join(change.kept)
        db.session.add(ResponseEvent(
            recipient_id=change.recipient_id, mailing_id=change.mailing_id, kind=RECLASSIFIED,
            source=SOURCE, occurred_at=now, received_at=now, applied=True, machine=False,
            detail=detail))
        if change.contact_restored and change.contact_id is not None:
            _restore(change, now)
    for mailing_id, counter in deltas.items():
        totals.bump(mailing_id, counter)


def _restore(change: Change, now: datetime) -> None:
    contact = db.session.get(Contact, change.contact_id)
    if contact is None:
        return
    if contact.invalid_reason in HARD_INVALID_REASONS:
        contact.valid = True
        contact.invalid_reason = ""
    if contact.do_not_email_reason == HARD_DNE_REASON:
        # Another reason the contact gave stays: an unsubscribe or a complaint.
        if "spam complaint" in change.kept:
            contact.do_not_email_reason = "spam complaint"
        elif "unsubscribed" in change.kept:
            contact.do_not_email_reason = "unsubscribed"
        else:
            contact.do_not_email = False
            contact.do_not_email_reason = ""
    contact.updated_at = now

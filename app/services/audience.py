"""Materialising a mailing's audience into recipient rows, eligibility included, in set-based SQL.

One INSERT ... SELECT writes every recipient with its response already decided: Planned for the
eligible, or the not-sent reason (duplicate, do not email, unsubscribed by type, invalid address,
inactive) exactly in the priority order of app.domain.eligibility. No Python loop runs per
recipient, so a million-contact audience costs one statement.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, exists, func, literal, select, union_all

from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    ListMember,
    Mailing,
    MailingCounter,
    MailingList,
    Recipient,
    TypeOptOut,
    utcnow,
)
from app.services import segments, settings, totals

RT = Recipient.__table__


def _inactivity_cutoff(now: datetime) -> datetime | None:
    days = int(settings.get("inactivity_days"))
    return now - timedelta(days=days) if days > 0 else None


def _members(mailing: Mailing, now: datetime) -> Any:
    """(contact_id, rank) for the audience: the members of its lists and the contacts of its
    segments, or a chain step's parent recipients."""
    if mailing.chain_parent_id is not None:
        parent = RT.alias("parent")
        handed = parent.c.handed_off_at.is_not(None)
        condition = {
            # People: an open by a privacy proxy or scanner (machine_opens) is not an opener.
            "openers": parent.c.opens > parent.c.machine_opens,
            "non_openers": parent.c.opens == parent.c.machine_opens,
        }.get(mailing.chain_condition, literal(True))
        return (
            select(parent.c.contact_id.label("contact_id"),
                   literal(1).label("rank"))
            .where(parent.c.mailing_id == mailing.chain_parent_id, handed, condition,
                   parent.c.contact_id.is_not(None))
            .distinct()
            .subquery("members")
        )
    # Plain lists by their members; segments by their rule, evaluated now. A contact reached
    # through several of them ranks 1 in the first (by list id) and is a duplicate after that.
    parts: list[Any] = [
        select(ListMember.contact_id.label("contact_id"), ListMember.list_id.label("list_id"))
        .join(MailingList, MailingList.list_id == ListMember.list_id)
        .where(MailingList.mailing_id == mailing.id)
    ]
    chosen_segments = db.session.execute(
        select(ContactList).join(MailingList, MailingList.list_id == ContactList.id)
        .where(MailingList.mailing_id == mailing.id, ContactList.rule.is_not(None))
        .order_by(ContactList.id)
    ).scalars()
    for segment in chosen_segments:
        parts.append(select(Contact.id.label("contact_id"), literal(segment.id).label("list_id"))
                     .where(segments.condition_sql(segments.rule_of(segment), now)))
    every = union_all(*parts).subquery("memberships")
    rank = func.row_number().over(partition_by=every.c.contact_id, order_by=every.c.list_id)
    return select(every.c.contact_id, rank.label("rank")).subquery("members")


def _response_expr(mailing: Mailing, members: Any, now: datetime) -> Any:
    whens = []
    if mailing.prevent_duplicates:
        whens.append((members.c.rank > 1, Response.DUPLICATE.value))
    whens.append((Contact.do_not_email.is_(True), Response.DO_NOT_EMAIL.value))
    # A transactional type ignores type opt-outs and the inactivity hold (app.domain.eligibility).
    transactional = bool(mailing.email_type and mailing.email_type.transactional)
    if mailing.email_type_id is not None and not transactional:
        opted = exists().where(TypeOptOut.contact_id == Contact.id,
                               TypeOptOut.email_type_id == mailing.email_type_id)
        whens.append((opted, Response.TYPE_UNSUBSCRIBED.value))
    whens.append((Contact.valid.is_(False), Response.INVALID_ADDRESS.value))
    cutoff = _inactivity_cutoff(now)
    if cutoff is not None and not transactional:
        last = func.coalesce(Contact.last_transaction_at, Contact.created_at)
        whens.append((last < cutoff, Response.INACTIVE.value))
    return case(*whens, else_=Response.PLANNED.value)


def materialise(mailing: Mailing) -> dict[str, int]:
    """Write the mailing's recipient rows (replacing any from an earlier try) in the caller's
    transaction, and set its response counters. Returns recipients per response."""
    now = utcnow()
    db.session.execute(delete(Recipient).where(Recipient.mailing_id == mailing.id))
    db.session.execute(delete(MailingCounter).where(MailingCounter.mailing_id == mailing.id))
    # Without "prevent duplicates" the rank is simply not consulted: every membership is sent.
    members = _members(mailing, now)
    response = _response_expr(mailing, members, now)
    source = (
        select(
            literal(mailing.id), Contact.id, Contact.email, response, literal(now),
            literal(0), literal(0), literal(0), literal(0), literal(False), literal(""),
        )
        .select_from(members.join(Contact, Contact.id == members.c.contact_id))
        .order_by(Contact.id, members.c.rank)
    )
    db.session.execute(
        RT.insert().from_select(
            ["mailing_id", "contact_id", "address", "response", "response_at", "opens",
             "clicks", "machine_opens", "machine_clicks", "crash_unknown", "detail"],
            source,
        )
    )
    counts = {
        row[0]: int(row[1])
        for row in db.session.execute(
            select(RT.c.response, func.count()).where(RT.c.mailing_id == mailing.id)
            .group_by(RT.c.response)
        )
    }
    deltas = {totals.response_key(k): v for k, v in counts.items()}
    deltas["recipients"] = sum(counts.values())
    deltas["eligible"] = counts.get(Response.PLANNED.value, 0)
    totals.bump(mailing.id, deltas)
    return counts


def preview_counts(mailing: Mailing) -> dict[str, int]:
    """What materialise would produce now, without writing: the editor's live eligible count."""
    now = utcnow()
    members = _members(mailing, now)
    response = _response_expr(mailing, members, now).label("response")
    inner = (
        select(response)
        .select_from(members.join(Contact, Contact.id == members.c.contact_id))
        .subquery()
    )
    rows = db.session.execute(select(inner.c.response, func.count()).group_by(inner.c.response))
    return {r: int(n) for r, n in rows}


def has_audience(mailing: Mailing) -> bool:
    if mailing.chain_parent_id is not None:
        return True
    return db.session.execute(
        select(MailingList.list_id).where(MailingList.mailing_id == mailing.id).limit(1)
    ).first() is not None


__all__ = ["has_audience", "materialise", "preview_counts"]

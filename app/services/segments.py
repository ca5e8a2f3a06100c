"""Segments in the database: saving them, and their rule as one SQL condition on contacts.

The condition is set-based (no Python per contact), so a segment of a million contacts costs the
same one statement inside the audience's INSERT ... SELECT (app.services.audience) as a list.
A segment may refer to plain lists, not to other segments: no cycles, and what a segment holds can
be read from its own rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from app.domain.segments import Condition, Rule, SegmentError, describe, parse
from app.extensions import db
from app.models import Contact, ContactList, ListMember, utcnow
from app.services.contacts import ContactError, checked_list_name, like_escape


def _text_condition(column: Any, c: Condition) -> ColumnElement[bool]:
    text = func.lower(func.coalesce(column, ""))
    value = str(c.value or "").lower()
    if c.op == "equals":
        return text == value
    if c.op == "not_equals":
        return text != value
    if c.op == "contains":
        return text.like(f"%{like_escape(value)}%", escape="\\")
    if c.op == "not_contains":
        return not_(text.like(f"%{like_escape(value)}%", escape="\\"))
    if c.op == "starts_with":
        return text.like(f"{like_escape(value)}%", escape="\\")
    if c.op == "ends_with":
        return text.like(f"%{like_escape(value)}", escape="\\")
    if c.op == "is_set":
        return text != ""
    if c.op == "is_not_set":
        return text == ""
    raise SegmentError(f"unknown operator {c.op!r}")


def _date_condition(column: Any, c: Condition, now: datetime) -> ColumnElement[bool]:
    if c.op == "never":
        return column.is_(None)
    cutoff = now - timedelta(days=int(c.value or 0))
    if c.op == "within_days":
        return column >= cutoff
    return column < cutoff  # before_days; a contact with no date is not "more than N days ago"


def condition_sql(rule: Rule, now: datetime | None = None) -> ColumnElement[bool]:
    """The rule as a WHERE condition on Contact."""
    now = now or utcnow()
    parts: list[ColumnElement[bool]] = []
    for c in rule.conditions:
        if c.subject == "email":
            parts.append(_text_condition(Contact.email, c))
        elif c.subject == "name":
            parts.append(_text_condition(Contact.name, c))
        elif c.subject == "field":
            parts.append(_text_condition(Contact.fields[c.key or ""].as_string(), c))
        elif c.subject == "last_transaction":
            parts.append(_date_condition(Contact.last_transaction_at, c, now))
        elif c.subject == "created":
            parts.append(_date_condition(Contact.created_at, c, now))
        elif c.subject == "list":
            members = select(ListMember.contact_id).where(ListMember.list_id == c.value)
            inside = Contact.id.in_(members)
            parts.append(inside if c.op == "in_list" else not_(inside))
        else:
            raise SegmentError(f"unknown subject {c.subject!r}")
    return and_(*parts) if rule.match == "all" else or_(*parts)


def rule_of(segment: ContactList) -> Rule:
    """The segment's stored rule, validated."""
    return parse(segment.rule)


def members(segment: ContactList, now: datetime | None = None) -> Any:
    """SELECT of the contact ids the segment holds now."""
    return select(Contact.id).where(condition_sql(rule_of(segment), now))


def count(rule: Rule) -> int:
    """How many contacts the rule picks now."""
    stmt = select(func.count()).select_from(Contact).where(condition_sql(rule))
    return int(db.session.execute(stmt).scalar_one())


def counts(segments: Iterable[ContactList]) -> dict[int, int]:
    """Contacts per segment now, by segment id (a stored rule that no longer parses counts 0)."""
    out = {}
    for segment in segments:
        try:
            out[segment.id] = count(rule_of(segment))
        except SegmentError:
            out[segment.id] = 0
    return out


def _check(rule: Rule, segment_id: int | None = None) -> None:
    for list_id in rule.list_ids():
        target = db.session.get(ContactList, list_id)
        if target is None:
            raise SegmentError(f"list #{list_id} does not exist")
        if target.rule is not None:
            raise SegmentError(f"{target.name!r} is a segment: a segment can refer to lists only")
        if list_id == segment_id:
            raise SegmentError("a segment cannot refer to itself")


def create_segment(name: str, rule: Rule, description: str = "") -> ContactList:
    """Save a new segment (ContactError for the name, SegmentError for the rule)."""
    clean = checked_list_name(name, "segment")
    _check(rule)
    segment = ContactList(name=clean, description=description.strip(), rule=rule.to_json())
    db.session.add(segment)
    db.session.flush()
    return segment


def update_segment(segment: ContactList, *, name: str, rule: Rule, description: str = "") -> None:
    """Change a segment's name, description and rule. Mailings already prepared keep the
    recipients it held then; drafts and scheduled mailings see the new rule when prepared."""
    if segment.rule is None:
        raise ContactError(f"{segment.name!r} is a list, not a segment")
    segment.name = checked_list_name(name, "segment", segment)
    _check(rule, segment.id)
    segment.description = description.strip()
    segment.rule = rule.to_json()


def description(segment: ContactList) -> str:
    """The segment's rule in words, lists named."""
    try:
        rule = rule_of(segment)
    except SegmentError as exc:
        return f"(this rule cannot be used: {exc})"
    names = {list_id: name for list_id, name in db.session.execute(
        select(ContactList.id, ContactList.name).where(ContactList.id.in_(rule.list_ids())))}
    return describe(rule, names)


__all__ = ["condition_sql", "count", "counts", "create_segment", "description", "members",
           "rule_of", "update_segment"]

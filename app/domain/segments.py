"""Segments: an audience chosen by a rule over contacts instead of fixed members.

A segment is stored as a list with a rule (``lists.rule``). The rule is a match mode and a few
conditions; it is evaluated when a mailing's audience is prepared, so a segment picks up contacts
imported or changed since it was saved. This module is the rule itself: its shape, its validation
(every message names the condition it is about) and its plain-language description. Turning a
rule into SQL is app.services.segments.

Stored form (JSON)::

    {"match": "all",                                  all | any
     "conditions": [
       {"subject": "email", "op": "ends_with", "value": "@example.org"},
       {"subject": "field", "key": "city", "op": "equals", "value": "Lyon"},
       {"subject": "last_transaction", "op": "within_days", "value": 365},
       {"subject": "list", "op": "in_list", "value": 3}]}

Text comparisons ignore case. Date conditions count whole days back from the moment the
audience is prepared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_CONDITIONS = 20
MAX_TEXT = 200
MAX_DAYS = 36_500

# Subjects and the operators each one accepts, with the words the description uses.
TEXT_OPS: dict[str, str] = {
    "equals": "is",
    "not_equals": "is not",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "is_set": "is filled in",
    "is_not_set": "is empty",
}
VALUELESS_OPS = frozenset({"is_set", "is_not_set", "never"})
DATE_OPS: dict[str, str] = {
    "within_days": "in the last {} days",
    "before_days": "more than {} days ago",
}
TRANSACTION_OPS: dict[str, str] = {**DATE_OPS, "never": "never"}
LIST_OPS: dict[str, str] = {"in_list": "is in list", "not_in_list": "is not in list"}

SUBJECTS: dict[str, str] = {
    "email": "Email address",
    "name": "Name",
    "field": "Custom field",
    "last_transaction": "Last transaction",
    "created": "Added",
    "list": "Contact",
}


def operators(subject: str) -> dict[str, str]:
    """The operators a subject accepts, with their words."""
    if subject in ("email", "name", "field"):
        return TEXT_OPS
    if subject == "last_transaction":
        return TRANSACTION_OPS
    if subject == "created":
        return DATE_OPS
    if subject == "list":
        return LIST_OPS
    return {}


class SegmentError(ValueError):
    """A rule that cannot be used; the message says which condition and why."""


@dataclass(frozen=True)
class Condition:
    subject: str
    op: str
    value: str | int | None = None
    key: str | None = None  # the custom field's name (subject "field")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"subject": self.subject, "op": self.op}
        if self.key is not None:
            data["key"] = self.key
        if self.value is not None:
            data["value"] = self.value
        return data


@dataclass(frozen=True)
class Rule:
    match: str
    conditions: tuple[Condition, ...]

    def to_json(self) -> dict[str, Any]:
        return {"match": self.match, "conditions": [c.to_json() for c in self.conditions]}

    def list_ids(self) -> set[int]:
        """The lists the rule refers to."""
        return {int(c.value) for c in self.conditions
                if c.subject == "list" and isinstance(c.value, int)}


def _days(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise SegmentError(f"{where}: give a number of days")
    if not 1 <= value <= MAX_DAYS:
        raise SegmentError(f"{where}: the number of days must be between 1 and {MAX_DAYS:,}")
    return value


def condition(data: Mapping[str, Any], where: str = "condition") -> Condition:
    """One condition from its stored or submitted form, validated."""
    subject = data.get("subject")
    if subject not in SUBJECTS:
        raise SegmentError(f"{where}: choose what to compare")
    op = data.get("op")
    allowed = operators(subject)
    if op not in allowed:
        raise SegmentError(f"{where}: {SUBJECTS[subject].lower()} cannot be compared with "
                           f"{str(op)[:30]!r}")
    key = None
    if subject == "field":
        raw_key = data.get("key")
        key = raw_key.strip() if isinstance(raw_key, str) else ""
        if not key or len(key) > 100:
            raise SegmentError(f"{where}: name the custom field (at most 100 characters)")
    value: str | int | None = None
    raw = data.get("value")
    if op in VALUELESS_OPS:
        value = None
    elif subject in ("last_transaction", "created"):
        value = _days(raw, where)
    elif subject == "list":
        if isinstance(raw, str) and raw.strip().isdigit():
            raw = int(raw.strip())
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
            raise SegmentError(f"{where}: choose a list")
        value = raw
    else:
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            raise SegmentError(f"{where}: give a value to compare with")
        if len(text) > MAX_TEXT:
            raise SegmentError(f"{where}: the value has at most {MAX_TEXT} characters")
        value = text
    return Condition(subject=subject, op=op, value=value, key=key)


def parse(data: Any) -> Rule:
    """A rule from its stored form (or a form's submission), validated; SegmentError otherwise."""
    if not isinstance(data, Mapping):
        raise SegmentError("a segment rule is an object with a match mode and conditions")
    match = data.get("match", "all")
    if match not in ("all", "any"):
        raise SegmentError("match must be 'all' or 'any'")
    raw = data.get("conditions")
    if not isinstance(raw, list | tuple) or not raw:
        raise SegmentError("a segment needs at least one condition")
    if len(raw) > MAX_CONDITIONS:
        raise SegmentError(f"a segment has at most {MAX_CONDITIONS} conditions")
    conditions = []
    for i, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            raise SegmentError(f"condition {i}: expected an object")
        conditions.append(condition(item, f"condition {i}"))
    return Rule(match=match, conditions=tuple(conditions))


def describe_condition(c: Condition, list_names: Mapping[int, str] | None = None) -> str:
    words = operators(c.subject)[c.op]
    if c.subject == "field":
        label = f"field {c.key!r}"
    elif c.subject == "list":
        name = (list_names or {}).get(int(c.value or 0), f"#{c.value}")
        return f"{words} {name!r}"
    else:
        label = SUBJECTS[c.subject].lower()
    if c.subject in ("last_transaction", "created"):
        return f"{label} {words.format(c.value)}"
    if c.value is None:
        return f"{label} {words}"
    return f"{label} {words} {str(c.value)!r}"


def describe(rule: Rule, list_names: Mapping[int, str] | None = None) -> str:
    """The rule in words, e.g. "all of: email address ends with '@example.org'; ..."."""
    parts = [describe_condition(c, list_names) for c in rule.conditions]
    if len(parts) == 1:
        return parts[0]
    return f"{rule.match} of: " + "; ".join(parts)

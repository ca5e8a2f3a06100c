"""Response events as pure rules: what each kind asks for, how it moves the counters, and what it
does to the contact (docs/ARCHITECTURE.md, "Responses")."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import events, figures
from app.domain.bounces import Reason
from app.domain.events import ContactEffect, Tally, contact_effect, counts_toward_invalid
from app.domain.responses import NOT_SENT, Response

HOUR = "opens@2026-11-23T10"


@pytest.mark.parametrize(("kind", "machine", "expected"), [
    ("open", False, Response.OPENED),
    ("click", False, Response.CLICKED),
    ("open", True, Response.DELIVERED),  # a proxy proves delivery, not interest
    ("click", True, Response.DELIVERED),
    ("delivered", False, Response.DELIVERED),
    ("hard_bounce", False, Response.HARD_BOUNCE),
    ("blocked", False, Response.BLOCKED),
    ("spam", False, Response.SPAM),
    ("deferred", False, None),
    ("auto_reply", False, None),
    ("delivered_report", False, None),
    ("resubscribed", False, None),
    ("reclassified", False, None),
])
def test_incoming_response(kind, machine, expected):
    assert events.incoming_response(kind, machine) is expected


def test_the_vocabulary_leaves_the_sender_its_own_responses():
    for response in (*NOT_SENT, Response.PLANNED):
        assert response.value not in events.KINDS
    assert {"open", "click", "deferred", "auto_reply"} <= events.KINDS


def test_first_human_open_counts_once_as_unique():
    tally = Tally(Response.SENT)
    deltas: dict[str, int] = {}
    events.count_activity(tally, "open", False, deltas, HOUR)
    events.count_activity(tally, "open", False, deltas, HOUR)
    assert deltas == {figures.OPENED_UNIQUE: 1, figures.OPENED_UNIQUE_HUMAN: 1,
                      figures.OPENS: 2, HOUR: 2}
    assert (tally.opens, tally.machine_opens) == (2, 0)


def test_a_machine_open_then_a_person_counts_the_person_once():
    tally = Tally(Response.SENT)
    deltas: dict[str, int] = {}
    events.count_activity(tally, "open", True, deltas, HOUR)
    assert deltas.get(figures.OPENED_UNIQUE_HUMAN, 0) == 0
    events.count_activity(tally, "open", False, deltas, HOUR)
    assert deltas[figures.OPENED_UNIQUE_HUMAN] == 1 and deltas[figures.OPENED_UNIQUE] == 1
    assert deltas[figures.OPENS_MACHINE] == 1


def test_move_response_moves_the_response_counters():
    tally = Tally(Response.SENT)
    deltas: dict[str, int] = {}
    assert events.move_response(tally, "hard_bounce", False, deltas)
    assert deltas == {"response:sent": -1, "response:hard_bounce": 1, "hard_bounces": 1}
    assert tally.response is Response.HARD_BOUNCE
    assert not events.move_response(tally, "delivered", False, deltas)  # final


def test_unknown_after_a_crash_yields_to_evidence_and_loses_its_flag():
    tally = Tally(Response.UNKNOWN, crash_unknown=True)
    deltas: dict[str, int] = {}
    assert events.move_response(tally, "delivered", False, deltas)
    assert tally.response is Response.DELIVERED and not tally.crash_unknown
    assert deltas[figures.DELIVERED_UNIQUE] == 1


_KINDS = sorted(events.KINDS)


@given(st.lists(st.tuples(st.sampled_from(_KINDS), st.booleans()), max_size=30),
       st.sampled_from([Response.PLANNED, Response.SENT, Response.UNKNOWN]), st.booleans())
def test_counters_always_agree_with_the_tally(sequence, start, crash):
    """Whatever arrives, the response counters move one recipient from one response to another,
    and the unique counters never exceed one per recipient."""
    tally = Tally(start, crash_unknown=crash and start is Response.UNKNOWN)
    deltas: Counter[str] = Counter()
    for kind, machine in sequence:
        if kind in ("open", "click"):
            events.count_activity(tally, kind, machine, deltas, f"{kind}s@h")
        events.move_response(tally, kind, machine, deltas)
    moved = {k: v for k, v in deltas.items() if k.startswith("response:") and v}
    if tally.response is start:
        assert moved == {}
    else:
        assert moved == {f"response:{start.value}": -1, f"response:{tally.response.value}": 1}
    for unique in (figures.OPENED_UNIQUE, figures.OPENED_UNIQUE_HUMAN, figures.CLICKED_UNIQUE,
                   figures.CLICKED_UNIQUE_HUMAN, figures.DELIVERED_UNIQUE):
        assert deltas[unique] in (0, 1)
    assert deltas[figures.OPENS] == tally.opens and deltas[figures.CLICKS] == tally.clicks
    assert deltas[figures.OPENED_UNIQUE_HUMAN] == (tally.opens > tally.machine_opens)


@pytest.mark.parametrize(("kind", "applied", "scope", "has_type", "effect"), [
    ("hard_bounce", True, "all", False, ContactEffect.INVALID),
    ("hard_bounce", False, "all", False, ContactEffect.NONE),  # after an open: an artefact
    ("spam", False, "all", False, ContactEffect.COMPLAINED),  # even on a final response
    ("unsubscribed", False, "all", False, ContactEffect.UNSUBSCRIBED),
    ("unsubscribed", True, "type", True, ContactEffect.TYPE_OPT_OUT),
    ("unsubscribed", True, "type", False, ContactEffect.UNSUBSCRIBED),  # no type: leave all
    ("resubscribed", False, "all", False, ContactEffect.RESUBSCRIBED),
    ("resubscribed", False, "type", True, ContactEffect.TYPE_OPT_IN),
    ("soft_bounce", True, "all", False, ContactEffect.NONE),
    ("blocked", True, "all", False, ContactEffect.NONE),
    ("dropped", True, "all", False, ContactEffect.NONE),
    ("delivery_error", True, "all", False, ContactEffect.NONE),
    ("unknown", True, "all", False, ContactEffect.NONE),
    ("open", True, "all", False, ContactEffect.NONE),
    ("auto_reply", False, "all", False, ContactEffect.NONE),
])
def test_contact_effects(kind, applied, scope, has_type, effect):
    assert contact_effect(kind, applied=applied, scope=scope, has_type=has_type) is effect
    assert (kind in events.CONTACT_KINDS) or effect is ContactEffect.NONE


@pytest.mark.parametrize(("reason", "counts"), [
    (Reason.MAILBOX_FULL.value, True),
    (Reason.SUSPENDED.value, True),
    (Reason.EXPIRED.value, True),
    (Reason.SYSTEM_ERROR.value, True),
    (Reason.UNDEFINED.value, True),
    (Reason.FILTERED.value, False),
    (Reason.BLOCKED.value, False),
    (Reason.SENDER.value, False),
    (Reason.POLICY.value, False),
    (Reason.TOO_LARGE.value, False),
    (Reason.RATE_LIMITED.value, False),
    ("", True),  # recorded before reasons were kept
    ("something new", True),
])
def test_which_soft_bounces_count_toward_an_invalid_address(reason, counts):
    assert counts_toward_invalid(reason) is counts

"""The mailing lifecycle (docs/ARCHITECTURE.md, "Mailing lifecycle"): every status against every action."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.lifecycle import (
    SCHEDULE_LOCK,
    STATUS_LABELS,
    Action,
    Status,
    TransitionError,
    allowed_actions,
    in_lock_window,
    is_locked,
    transition,
)

S, A = Status, Action
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FAR = NOW + timedelta(days=1)  # a send time well outside the lock window

# Outcome of every (status, action) with the clock far from any send time. A Status is the target;
# a string is a fragment the refusal message must contain (it tells the user why, or what to do).
GENERIC = "A {status} mailing cannot be {done}."
DONE = {
    A.UNSCHEDULE: "unscheduled", A.RESCHEDULE: "rescheduled", A.START: "started",
    A.BEGIN_SENDING: "sent", A.FINISH: "finished", A.CANCEL: "canceled", A.INTERRUPT: "interrupted",
    A.EXPIRE: "expired", A.COPY: "copied",
}
SPECIFIC = {
    A.DELETE: "Only a draft can be deleted",
    A.EDIT: "can no longer be edited",
    A.RESUME: "Only an interrupted mailing can be resumed",
    A.SEND_NOW: "Only a draft can be sent now",
    A.SCHEDULE: "Only a draft can be scheduled",
}
NOT_DUE = "not due yet"

ALLOWED: dict[Status, dict[Action, Status]] = {
    S.DRAFT: {A.SCHEDULE: S.SCHEDULED, A.SEND_NOW: S.PREPARING, A.EDIT: S.DRAFT, A.COPY: S.DRAFT,
              A.DELETE: S.DRAFT},
    S.SCHEDULED: {A.RESCHEDULE: S.SCHEDULED, A.UNSCHEDULE: S.DRAFT, A.CANCEL: S.DRAFT,
                  A.EDIT: S.SCHEDULED, A.COPY: S.SCHEDULED},  # START: only when due (below)
    S.PREPARING: {A.BEGIN_SENDING: S.SENDING, A.CANCEL: S.CANCELED, A.INTERRUPT: S.INTERRUPTED},
    S.SENDING: {A.FINISH: S.SENT, A.EXPIRE: S.SENT, A.CANCEL: S.CANCELED, A.INTERRUPT: S.INTERRUPTED},
    S.SENT: {A.COPY: S.SENT},
    S.CANCELED: {A.COPY: S.CANCELED},
    S.INTERRUPTED: {A.RESUME: S.SENDING, A.CANCEL: S.CANCELED, A.COPY: S.INTERRUPTED},
}


def _expected(status: Status, action: Action) -> Status | str:
    if action in ALLOWED[status]:
        return ALLOWED[status][action]
    if status is S.SCHEDULED and action is A.START:
        return NOT_DUE
    if action in SPECIFIC:
        return SPECIFIC[action]
    return GENERIC.format(status=status.value, done=DONE[action])


TABLE = [pytest.param(s, a, _expected(s, a), id=f"{s.value}-{a.value}") for s in Status for a in Action]


def test_table_is_complete() -> None:
    assert len(TABLE) == len(Status) * len(Action) == 7 * 14


@pytest.mark.parametrize(("status", "action", "expected"), TABLE)
def test_every_status_and_action(status: Status, action: Action, expected: Status | str) -> None:
    if isinstance(expected, Status):
        assert transition(status, action, now=NOW, send_at=FAR) is expected
    else:
        with pytest.raises(TransitionError, match=re.escape(expected)):
            transition(status, action, now=NOW, send_at=FAR)


@pytest.mark.parametrize(("status", "action"), [(s, a) for s in Status for a in Action])
def test_refusals_are_sentences_for_the_user(status: Status, action: Action) -> None:
    try:
        transition(status, action, now=NOW, send_at=FAR)
    except TransitionError as exc:
        message = str(exc)
        assert message[0].isupper() and message.endswith("."), message
        assert "Status." not in message and "Action." not in message
        assert isinstance(exc, ValueError)


def test_refused_edit_delete_resume_say_what_is_possible() -> None:
    with pytest.raises(TransitionError, match="cancel it first"):
        transition(S.SCHEDULED, A.DELETE, now=NOW, send_at=FAR)
    with pytest.raises(TransitionError, match="sending has started"):
        transition(S.SENDING, A.EDIT, now=NOW)
    with pytest.raises(TransitionError, match="A draft mailing cannot be canceled"):
        transition(S.DRAFT, A.CANCEL, now=NOW)


# --- the 5-minute lock window ----------------------------------------------------------------

SEND_AT = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
LOCK_START = SEND_AT - timedelta(minutes=5)
ONE_SECOND = timedelta(seconds=1)


def test_lock_is_five_minutes() -> None:
    assert SCHEDULE_LOCK == timedelta(minutes=5)


@pytest.mark.parametrize(("now", "locked"), [
    (LOCK_START - timedelta(days=3), False),
    (LOCK_START - ONE_SECOND, False),
    (LOCK_START - timedelta(microseconds=1), False),
    (LOCK_START, True),
    (LOCK_START + ONE_SECOND, True),
    (SEND_AT - ONE_SECOND, True),
    (SEND_AT, True),
    (SEND_AT + timedelta(hours=1), True),  # overdue, not yet started by the tick
])
def test_lock_window_boundaries(now: datetime, locked: bool) -> None:
    assert in_lock_window(now=now, send_at=SEND_AT) is locked
    assert is_locked(S.SCHEDULED, now=now, send_at=SEND_AT) is locked


def test_lock_window_boundary_in_another_offset() -> None:
    prague = timezone(timedelta(hours=2))
    assert is_locked(S.SCHEDULED, now=LOCK_START.astimezone(prague), send_at=SEND_AT)
    assert not is_locked(S.SCHEDULED, now=(LOCK_START - ONE_SECOND).astimezone(prague), send_at=SEND_AT)


@pytest.mark.parametrize("action", [A.RESCHEDULE, A.UNSCHEDULE, A.EDIT])
def test_changes_are_refused_inside_the_window(action: Action) -> None:
    assert transition(S.SCHEDULED, action, now=LOCK_START - ONE_SECOND, send_at=SEND_AT) is ALLOWED[S.SCHEDULED][action]
    for now in (LOCK_START, SEND_AT - ONE_SECOND, SEND_AT):
        with pytest.raises(TransitionError, match=r"locked.*less than 5 minutes.*Cancel the schedule"):
            transition(S.SCHEDULED, action, now=now, send_at=SEND_AT)


@pytest.mark.parametrize("now", [LOCK_START - ONE_SECOND, LOCK_START, SEND_AT - ONE_SECOND])
def test_cancel_returns_a_scheduled_mailing_to_draft_even_inside_the_window(now: datetime) -> None:
    assert transition(S.SCHEDULED, A.CANCEL, now=now, send_at=SEND_AT) is S.DRAFT


def test_copy_is_allowed_inside_the_window() -> None:
    assert transition(S.SCHEDULED, A.COPY, now=LOCK_START, send_at=SEND_AT) is S.SCHEDULED


@pytest.mark.parametrize(("now", "allowed"), [
    (NOW, False),
    (LOCK_START, False),
    (SEND_AT - ONE_SECOND, False),
    (SEND_AT - timedelta(microseconds=1), False),
    (SEND_AT, True),
    (SEND_AT + timedelta(hours=2), True),
])
def test_start_only_when_due(now: datetime, allowed: bool) -> None:
    if allowed:
        assert transition(S.SCHEDULED, A.START, now=now, send_at=SEND_AT) is S.PREPARING
    else:
        with pytest.raises(TransitionError, match=NOT_DUE):
            transition(S.SCHEDULED, A.START, now=now, send_at=SEND_AT)


def test_start_without_a_send_time_is_refused() -> None:
    with pytest.raises(TransitionError, match=NOT_DUE):
        transition(S.SCHEDULED, A.START, now=NOW, send_at=None)


@pytest.mark.parametrize("status", [s for s in Status if s is not S.SCHEDULED])
def test_start_is_only_for_scheduled_mailings(status: Status) -> None:
    with pytest.raises(TransitionError, match="cannot be started"):
        transition(status, A.START, now=SEND_AT, send_at=SEND_AT)


# --- naive datetimes -------------------------------------------------------------------------

NAIVE = datetime(2026, 6, 1, 12, 0)


@pytest.mark.parametrize(("status", "action"), [(s, a) for s in Status for a in Action])
def test_naive_now_is_rejected(status: Status, action: Action) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(status, action, now=NAIVE, send_at=FAR)


@pytest.mark.parametrize("status", list(Status))
def test_naive_send_at_is_rejected(status: Status) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(status, A.COPY, now=NOW, send_at=NAIVE)


def test_naive_datetimes_are_rejected_by_the_lock_checks() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        in_lock_window(now=NAIVE, send_at=SEND_AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        in_lock_window(now=NOW, send_at=NAIVE)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_locked(S.SCHEDULED, now=NAIVE, send_at=SEND_AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        allowed_actions(S.SENDING, now=NAIVE, send_at=None)


# --- is_locked and allowed_actions -----------------------------------------------------------

@pytest.mark.parametrize(("status", "far", "inside"), [
    (S.DRAFT, False, False),
    (S.SCHEDULED, False, True),
    (S.PREPARING, True, True),
    (S.SENDING, True, True),
    (S.SENT, True, True),
    (S.CANCELED, True, True),
    (S.INTERRUPTED, True, True),
])
def test_is_locked_per_status(status: Status, far: bool, inside: bool) -> None:
    assert is_locked(status, now=NOW, send_at=FAR) is far
    assert is_locked(status, now=LOCK_START, send_at=SEND_AT) is inside
    if status is not S.SCHEDULED:
        assert is_locked(status, now=NOW, send_at=None) is far


def test_a_scheduled_mailing_without_a_send_time_is_not_locked() -> None:
    assert not is_locked(S.SCHEDULED, now=NOW, send_at=None)


@pytest.mark.parametrize("status", list(Status))
def test_allowed_actions_far_from_the_send_time(status: Status) -> None:
    assert allowed_actions(status, now=NOW, send_at=FAR) == set(ALLOWED[status])


def test_allowed_actions_of_a_scheduled_mailing_through_time() -> None:
    far = allowed_actions(S.SCHEDULED, now=LOCK_START - ONE_SECOND, send_at=SEND_AT)
    inside = allowed_actions(S.SCHEDULED, now=LOCK_START, send_at=SEND_AT)
    due = allowed_actions(S.SCHEDULED, now=SEND_AT, send_at=SEND_AT)
    assert far == {A.RESCHEDULE, A.UNSCHEDULE, A.CANCEL, A.EDIT, A.COPY}
    assert inside == {A.CANCEL, A.COPY}
    assert due == {A.CANCEL, A.COPY, A.START}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Status)),
       st.integers(min_value=-3 * 86400, max_value=3 * 86400),
       st.booleans())
def test_allowed_actions_agree_with_transition(status: Status, offset: int, has_send_at: bool) -> None:
    now = SEND_AT + timedelta(seconds=offset)
    send_at = SEND_AT if has_send_at else None
    allowed = allowed_actions(status, now=now, send_at=send_at)
    for action in Action:
        if action in allowed:
            assert transition(status, action, now=now, send_at=send_at) in Status
        else:
            with pytest.raises(TransitionError):
                transition(status, action, now=now, send_at=send_at)
    # Editing is possible exactly when the mailing is not locked.
    assert (A.EDIT in allowed) is (not is_locked(status, now=now, send_at=send_at))


def test_status_labels() -> None:
    assert STATUS_LABELS == {S.DRAFT: "Draft", S.SCHEDULED: "Scheduled", S.PREPARING: "Preparing",
                             S.SENDING: "Sending", S.SENT: "Sent", S.CANCELED: "Canceled",
                             S.INTERRUPTED: "Interrupted"}

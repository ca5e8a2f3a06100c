"""The mailing lifecycle: every state, every action and when it is allowed (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    PREPARING = "preparing"
    SENDING = "sending"
    SENT = "sent"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"


STATUS_LABELS: dict[Status, str] = {s: s.value.capitalize() for s in Status}


class Action(StrEnum):
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"
    RESCHEDULE = "reschedule"
    SEND_NOW = "send_now"
    START = "start"
    BEGIN_SENDING = "begin_sending"
    FINISH = "finish"
    CANCEL = "cancel"
    INTERRUPT = "interrupt"
    RESUME = "resume"
    EXPIRE = "expire"
    COPY = "copy"
    DELETE = "delete"
    EDIT = "edit"


class TransitionError(ValueError):
    """An action that the mailing's state does not allow; the message is for the user."""


SCHEDULE_LOCK = timedelta(minutes=5)

# (from, action) -> to, for the actions whose outcome does not depend on the clock.
_MOVES: dict[tuple[Status, Action], Status] = {
    (Status.DRAFT, Action.SCHEDULE): Status.SCHEDULED,
    (Status.DRAFT, Action.SEND_NOW): Status.PREPARING,
    (Status.DRAFT, Action.EDIT): Status.DRAFT,
    (Status.DRAFT, Action.COPY): Status.DRAFT,
    (Status.DRAFT, Action.DELETE): Status.DRAFT,
    (Status.SCHEDULED, Action.RESCHEDULE): Status.SCHEDULED,
    (Status.SCHEDULED, Action.UNSCHEDULE): Status.DRAFT,
    (Status.SCHEDULED, Action.EDIT): Status.SCHEDULED,
    (Status.SCHEDULED, Action.CANCEL): Status.DRAFT,
    (Status.SCHEDULED, Action.START): Status.PREPARING,
    (Status.SCHEDULED, Action.COPY): Status.SCHEDULED,
    (Status.PREPARING, Action.BEGIN_SENDING): Status.SENDING,
    (Status.PREPARING, Action.CANCEL): Status.CANCELED,
    (Status.PREPARING, Action.INTERRUPT): Status.INTERRUPTED,
    (Status.SENDING, Action.FINISH): Status.SENT,
    (Status.SENDING, Action.EXPIRE): Status.SENT,
    (Status.SENDING, Action.CANCEL): Status.CANCELED,
    (Status.SENDING, Action.INTERRUPT): Status.INTERRUPTED,
    (Status.INTERRUPTED, Action.RESUME): Status.SENDING,
    (Status.INTERRUPTED, Action.CANCEL): Status.CANCELED,
    (Status.INTERRUPTED, Action.COPY): Status.INTERRUPTED,
    (Status.SENT, Action.COPY): Status.SENT,
    (Status.CANCELED, Action.COPY): Status.CANCELED,
}

# Actions a scheduled mailing refuses inside the lock window (cancel stays allowed: it unlocks).
_LOCKABLE = frozenset({Action.RESCHEDULE, Action.UNSCHEDULE, Action.EDIT})

_REFUSALS: dict[Action, str] = {
    Action.DELETE: "Only a draft can be deleted; cancel it first or keep it for its history.",
    Action.EDIT: "This mailing can no longer be edited: sending has started.",
    Action.RESUME: "Only an interrupted mailing can be resumed.",
    Action.SEND_NOW: "Only a draft can be sent now.",
    Action.SCHEDULE: "Only a draft can be scheduled.",
}


_DONE: dict[Action, str] = {
    Action.SCHEDULE: "scheduled", Action.UNSCHEDULE: "unscheduled",
    Action.RESCHEDULE: "rescheduled", Action.SEND_NOW: "sent now", Action.START: "started",
    Action.BEGIN_SENDING: "sent", Action.FINISH: "finished", Action.CANCEL: "canceled",
    Action.INTERRUPT: "interrupted", Action.RESUME: "resumed", Action.EXPIRE: "expired",
    Action.COPY: "copied", Action.DELETE: "deleted", Action.EDIT: "edited",
}


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def in_lock_window(*, now: datetime, send_at: datetime | None) -> bool:
    """True from 5 minutes before a scheduled send time on."""
    if send_at is None:
        return False
    _aware(now, "now")
    _aware(send_at, "send_at")
    return now >= send_at - SCHEDULE_LOCK


def transition(status: Status, action: Action, *, now: datetime,
               send_at: datetime | None = None) -> Status:
    """The status after `action`, or TransitionError saying why it is refused."""
    _aware(now, "now")
    if send_at is not None:
        _aware(send_at, "send_at")
    target = _MOVES.get((status, action))
    if target is None:
        message = _REFUSALS.get(action, f"A {status.value} mailing cannot be {_DONE[action]}.")
        raise TransitionError(message)
    if status is Status.SCHEDULED:
        if action in _LOCKABLE and in_lock_window(now=now, send_at=send_at):
            raise TransitionError(
                "This mailing is locked: it is sent in less than 5 minutes. "
                "Cancel the schedule to change it."
            )
        if action is Action.START and (send_at is None or now < send_at):
            raise TransitionError("This mailing is not due yet.")
    return target


def moves_of(action: Action) -> dict[Status, Status]:
    """Every status `action` may be taken from, with the status it leads to (the moves that do
    not depend on the clock): what a conditional UPDATE taking that action may change."""
    return {source: target for (source, act), target in _MOVES.items() if act is action}


def is_locked(status: Status, *, now: datetime, send_at: datetime | None) -> bool:
    """Template, audience and owner are read-only from Preparing on, and for a scheduled mailing
    inside the 5-minute window before its send time."""
    if status is Status.DRAFT:
        return False
    if status is Status.SCHEDULED:
        return in_lock_window(now=now, send_at=send_at)
    return True


def allowed_actions(status: Status, *, now: datetime, send_at: datetime | None) -> frozenset[Action]:
    """Every action the user or the system may take now."""
    allowed = set()
    for action in Action:
        try:
            transition(status, action, now=now, send_at=send_at)
        except TransitionError:
            continue
        allowed.add(action)
    return frozenset(allowed)

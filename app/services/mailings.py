"""What staff do with mailings: create, edit, schedule, send, cancel, resume, copy, delete.

Every state change goes through app.domain.lifecycle.transition, so a refused action comes back
as a MailingError carrying the rule's own message. Sending work itself is enqueued for the RQ
workers; these functions only change the database and signal them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, select, update

from app.domain.lifecycle import Action, Status, TransitionError, is_locked, transition
from app.domain.responses import Response
from app.domain.schedule import ResolvedTime, ScheduleError, check_future, to_utc
from app.extensions import db
from app.models import Mailing, MailingList, Recipient, utcnow
from app.services import audience, sending
from app.services.rendering import (
    UNSUBSCRIBE_HINT,
    TemplateProblem,
    bodies_without_unsubscribe,
    check_template,
)

log = logging.getLogger("sendboard.mailings")

EDITABLE = (
    "name", "subject", "from_name", "from_address", "reply_to", "html_body", "text_body",
    "email_type_id", "owner_id", "prevent_duplicates", "send_until", "utm_source",
    "utm_medium", "utm_campaign", "chain_delay_days", "chain_condition",
)
CHAIN_CONDITIONS = ("all", "openers", "non_openers")


class MailingError(ValueError):
    """An action on a mailing was refused; the message says why, in the user's words."""


def _act(mailing: Mailing, action: Action, now: datetime | None = None) -> Status:
    try:
        return transition(mailing.status_enum, action, now=now or utcnow(),
                          send_at=mailing.send_at)
    except TransitionError as exc:
        raise MailingError(str(exc)) from exc


def get(mailing_id: int) -> Mailing:
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        raise MailingError(f"mailing {mailing_id} does not exist")
    return mailing


def locked(mailing: Mailing, now: datetime | None = None) -> bool:
    """Template, audience and owner are read-only (sending started, or schedule lock window)."""
    return is_locked(mailing.status_enum, now=now or utcnow(), send_at=mailing.send_at)


def _check_content(values: dict[str, Any]) -> None:
    for key, what in (("subject", "Subject"), ("html_body", "HTML body"),
                      ("text_body", "Text body")):
        if key in values and values[key] is not None:
            try:
                check_template(values[key], what)
            except TemplateProblem as exc:
                raise MailingError(f"The template cannot be used: {exc}") from exc
    if values.get("chain_condition") not in (None, *CHAIN_CONDITIONS):
        raise MailingError(f"chain condition must be one of {', '.join(CHAIN_CONDITIONS)}")


def create(*, owner_id: int | None, name: str, list_ids: list[int] | None = None,
           **values: Any) -> Mailing:
    """A new Draft; templates that cannot compile are refused here, not at send time."""
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise MailingError(f"unknown fields: {', '.join(sorted(unknown))}")
    if not name.strip():
        raise MailingError("a mailing needs a name")
    _check_content(values)
    mailing = Mailing(name=name.strip(), owner_id=owner_id, status=Status.DRAFT.value, **values)
    db.session.add(mailing)
    db.session.flush()
    if list_ids:
        _set_lists(mailing, list_ids)
    db.session.commit()
    return mailing


def update_content(mailing: Mailing, *, list_ids: list[int] | None = None,
                   **values: Any) -> Mailing:
    """Edit a mailing; refused once it is locked."""
    _act(mailing, Action.EDIT)
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise MailingError(f"unknown fields: {', '.join(sorted(unknown))}")
    _check_content(values)
    for key, value in values.items():
        setattr(mailing, key, value)
    if list_ids is not None:
        _set_lists(mailing, list_ids)
    db.session.commit()
    return mailing


def _set_lists(mailing: Mailing, list_ids: list[int]) -> None:
    db.session.execute(delete(MailingList).where(MailingList.mailing_id == mailing.id))
    for list_id in dict.fromkeys(list_ids):
        db.session.add(MailingList(mailing_id=mailing.id, list_id=list_id))


def list_ids(mailing: Mailing) -> list[int]:
    return [r[0] for r in db.session.execute(
        select(MailingList.list_id).where(MailingList.mailing_id == mailing.id)
    )]


def _ready_to_send(mailing: Mailing) -> None:
    missing = [label for label, value in (("a subject", mailing.subject),
                                          ("a from address", mailing.from_address),
                                          ("an HTML or text body",
                                           mailing.html_body or mailing.text_body)) if not value]
    if not audience.has_audience(mailing):
        missing.append("an audience")
    if missing:
        raise MailingError(f"The mailing needs {', '.join(missing)} before it can be sent.")
    _check_content({"subject": mailing.subject, "html_body": mailing.html_body,
                    "text_body": mailing.text_body})
    _require_unsubscribe_link(mailing)
    _require_buildable(mailing)


def _require_unsubscribe_link(mailing: Mailing) -> None:
    """Every part a recipient may read must let them unsubscribe."""
    lacking = bodies_without_unsubscribe(mailing.html_body or "", mailing.text_body or "")
    if lacking:
        raise MailingError(f"The {' and the '.join(lacking)} need an unsubscribe link before the"
                           f" mailing can be sent. {UNSUBSCRIBE_HINT}"
                           if len(lacking) > 1 else
                           f"The {lacking[0]} needs an unsubscribe link before the mailing can be"
                           f" sent. {UNSUBSCRIBE_HINT}")


def _require_buildable(mailing: Mailing) -> None:
    """The message must build for a few recipients of the audience (or a preview contact)."""
    from app.services import render_check

    found = render_check.problem(mailing)
    if found:
        raise MailingError(f"The message cannot be built {found}. Fix the template or the "
                           "contacts' data before sending.")


def schedule(mailing: Mailing, local: datetime, zone: str,
             now: datetime | None = None) -> ResolvedTime:
    """Draft (or Scheduled, outside the lock window) -> Scheduled at a local time in `zone`."""
    now = now or utcnow()
    action = Action.RESCHEDULE if mailing.status == Status.SCHEDULED.value else Action.SCHEDULE
    _act(mailing, action, now)
    try:
        resolved = to_utc(local, zone)
        check_future(resolved.utc, now)
    except ScheduleError as exc:
        raise MailingError(str(exc)) from exc
    if mailing.chain_parent_id is None:
        _ready_to_send(mailing)
    mailing.send_at = resolved.utc
    mailing.send_at_zone = zone
    mailing.status = Status.SCHEDULED.value
    db.session.commit()
    return resolved


def unschedule(mailing: Mailing) -> None:
    """Scheduled -> Draft; the mailing is kept."""
    new = _act(mailing, Action.UNSCHEDULE)
    mailing.status = new.value
    mailing.send_at = None
    db.session.commit()


def send_now(mailing: Mailing) -> None:
    """Draft -> Preparing; a worker materialises the audience and starts sending."""
    _ready_to_send(mailing)
    new = _act(mailing, Action.SEND_NOW)
    mailing.status = new.value
    mailing.status_reason = ""
    db.session.commit()
    enqueue_prepare(mailing.id)


def enqueue_prepare(mailing_id: int) -> None:
    from jobs.enqueue import prepare

    prepare(mailing_id)


def start_due(now: datetime | None = None) -> list[int]:
    """Scheduled mailings whose time has come -> Preparing (called by the scheduler tick)."""
    now = now or utcnow()
    due = db.session.execute(
        select(Mailing.id).where(Mailing.status == Status.SCHEDULED.value,
                                 Mailing.send_at <= now)
        .order_by(Mailing.send_at, Mailing.id)
    ).scalars().all()
    started = []
    for mailing_id in due:
        changed = db.session.execute(
            update(Mailing).where(Mailing.id == mailing_id,
                                  Mailing.status == Status.SCHEDULED.value)
            .values(status=Status.PREPARING.value)
        ).rowcount
        db.session.commit()
        if changed:
            started.append(mailing_id)
    return started


def prepare(mailing_id: int) -> dict[str, int] | None:
    """Preparing -> Sending: freeze the template, materialise the audience (one transaction)."""
    from app.services.freeze import freeze_version

    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None or mailing.status != Status.PREPARING.value:
        db.session.rollback()
        return None
    if db.engine.dialect.name == "postgresql":
        db.session.execute(select(Mailing.id).where(Mailing.id == mailing_id).with_for_update())
        db.session.refresh(mailing)
        if mailing.status != Status.PREPARING.value:
            db.session.rollback()
            return None
    try:
        freeze_version(mailing)
    except TemplateProblem as exc:
        db.session.rollback()
        sending.interrupt(mailing_id, f"the template cannot be used: {exc}")
        return None
    counts = audience.materialise(mailing)
    now = utcnow()
    mailing.status = transition(Status.PREPARING, Action.BEGIN_SENDING, now=now).value
    mailing.started_at = now
    mailing.queued_at = now
    db.session.commit()
    sending.clear_stop_flag(mailing_id)
    log.info("mailing %s prepared: %s", mailing_id, counts)
    if not counts.get(Response.PLANNED.value):
        sending.finish_if_done(mailing_id)  # nobody eligible: Sent, everything under Not sent
    return counts


def cancel(mailing: Mailing) -> int:
    """Cancel: a scheduled mailing returns to Draft; a sending one stops within about a second
    and its recipients not sent get Canceled. Returns how many were canceled here."""
    new = _act(mailing, Action.CANCEL)
    if new is Status.DRAFT:
        mailing.status = new.value
        mailing.send_at = None
        db.session.commit()
        return 0
    if db.engine.dialect.name == "postgresql":
        db.session.execute(select(Mailing.id).where(Mailing.id == mailing.id).with_for_update())
    mailing.status = new.value
    mailing.status_reason = "canceled by staff"
    mailing.finished_at = utcnow()
    _end_interruption(mailing, mailing.finished_at)
    count = sending.cancel_unclaimed(mailing.id)
    db.session.commit()
    sending._set_stop_flag(mailing.id)
    from app.services.chains import on_step_interrupted

    on_step_interrupted(mailing.id)
    return count


def _end_interruption(mailing: Mailing, now: datetime) -> None:
    """Add the interruption that ends now to the time the mailing spent Interrupted."""
    if mailing.interrupted_at is not None:
        paused = max(int((now - mailing.interrupted_at).total_seconds()), 0)
        mailing.interrupted_seconds = (mailing.interrupted_seconds or 0) + paused
        mailing.interrupted_at = None


def resume(mailing: Mailing) -> None:
    """Interrupted -> Sending: continue with the recipients still Planned, nobody twice."""
    new = _act(mailing, Action.RESUME)
    mailing.status = new.value
    mailing.status_reason = ""
    _end_interruption(mailing, utcnow())
    db.session.commit()
    sending.clear_stop_flag(mailing.id)
    from jobs.enqueue import kick_sending

    kick_sending()


def copy(mailing: Mailing, owner_id: int | None) -> Mailing:
    """A new Draft with the same content and audience."""
    _act(mailing, Action.COPY)
    values = {k: getattr(mailing, k) for k in EDITABLE if k not in ("owner_id", "send_until")}
    clone = Mailing(status=Status.DRAFT.value, owner_id=owner_id, copied_from_id=mailing.id,
                    **{**values, "name": f"Copy of {mailing.name}"})
    clone.chain_parent_id = None
    db.session.add(clone)
    db.session.flush()
    _set_lists(clone, list_ids(mailing))
    db.session.commit()
    return clone


def delete_mailing(mailing: Mailing) -> None:
    """Only a Draft can be deleted; its later chain steps go with it (the chain_parent_id
    foreign key cascades)."""
    _act(mailing, Action.DELETE)
    db.session.delete(mailing)
    db.session.commit()


def not_sent_recipients(mailing_id: int, limit: int = 100, after_id: int = 0) -> list[Recipient]:
    """Recipients that were not sent (canceled, expired, skipped), for the not-sent list."""
    from app.domain.responses import NOT_SENT

    return list(db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing_id,
                                Recipient.response.in_([r.value for r in NOT_SENT]),
                                Recipient.id > after_id)
        .order_by(Recipient.id).limit(limit)
    ).scalars())


def base_url() -> str:
    return str(current_app.config["BASE_URL"])

"""What staff do with mailings: create, edit, schedule, send, cancel, resume, copy, delete.

Every state change goes through app.domain.lifecycle.transition, so a refused action comes back
as a MailingError carrying the rule's own message. Sending work itself is enqueued for the RQ
workers; these functions only change the database and signal them.

Unit of work: editing, scheduling, copying, deleting and resending leave the commit to the caller
(the view commits once the service returns). The actions that signal the workers (send now,
resume, cancel) commit before the signal, since a worker must see the change it is woken for;
`create` commits too, as scripts and tests build mailings with it in one call.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, literal, select, update

from app.domain import interruptions
from app.domain.eligibility import address_key
from app.domain.lifecycle import Action, Status, TransitionError, is_locked, moves_of, transition
from app.domain.responses import Response
from app.domain.schedule import ResolvedTime, ScheduleError, check_future, to_utc
from app.extensions import db
from app.models import Contact, Mailing, MailingList, Recipient, Suppression, utcnow
from app.services import audience, sending, settings, totals
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
    """A new Draft, committed; templates that cannot compile are refused here, not at send
    time."""
    mailing = new_draft(owner_id=owner_id, name=name, list_ids=list_ids, **values)
    db.session.commit()
    return mailing


def new_draft(*, owner_id: int | None, name: str, list_ids: list[int] | None = None,
              **values: Any) -> Mailing:
    """`create` without the commit, for callers that add more to the same unit of work."""
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
    if list_ids is not None and mailing.resend_of_id is None:
        _set_lists(mailing, list_ids)
    db.session.flush()
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
    if mailing.resend_of_id is not None:
        if not resend_size(mailing):
            missing.append("an audience (nobody was left to resend to)")
    elif not audience.has_audience(mailing):
        missing.append("an audience")
    if missing:
        raise MailingError(f"The mailing needs {', '.join(missing)} before it can be sent.")
    _check_content({"subject": mailing.subject, "html_body": mailing.html_body,
                    "text_body": mailing.text_body})
    _require_unsubscribe_link(mailing)
    _require_buildable(mailing)


def send_problem(mailing: Mailing) -> str | None:
    """Why the mailing cannot be sent as it is (the checks of Send now), or None."""
    try:
        _ready_to_send(mailing)
    except MailingError as exc:
        return str(exc)
    return None


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
    new = _act(mailing, action, now)
    try:
        resolved = to_utc(local, zone)
        check_future(resolved.utc, now)
    except ScheduleError as exc:
        raise MailingError(str(exc)) from exc
    _ready_to_send(mailing)  # a chain step too: it goes out by itself, link and all
    mailing.send_at = resolved.utc
    mailing.send_at_zone = zone
    mailing.status = new.value
    mailing.status_reason = ""
    db.session.flush()
    return resolved


def unschedule(mailing: Mailing) -> None:
    """Scheduled -> Draft; the mailing is kept."""
    new = _act(mailing, Action.UNSCHEDULE)
    mailing.status = new.value
    mailing.send_at = None
    db.session.flush()


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
        if _held_back(mailing_id):
            continue
        start = moves_of(Action.START)  # Scheduled -> Preparing; the query above found it due
        changed = db.session.execute(
            update(Mailing).where(Mailing.id == mailing_id,
                                  Mailing.status.in_([s.value for s in start]))
            .values(status=start[Status.SCHEDULED].value)
        ).rowcount
        db.session.commit()
        if changed:
            started.append(mailing_id)
    return started


def _held_back(mailing_id: int) -> bool:
    """A due mailing whose bodies lack an unsubscribe link (edited after it was scheduled, or a
    chain step scheduled by its parent) goes back to Draft with the reason instead of starting.
    Committed here: the scheduler tick is this function's caller and its unit of work."""
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None or mailing.status != Status.SCHEDULED.value:
        return True  # no longer scheduled: nothing to start
    try:
        _require_unsubscribe_link(mailing)
    except MailingError as exc:
        # As a cancel of the schedule does (allowed inside the lock window): back to Draft.
        mailing.status = transition(Status.SCHEDULED, Action.CANCEL, now=utcnow()).value
        mailing.send_at = None
        mailing.status_reason = f"Not sent at its scheduled time: {exc}"
        db.session.commit()
        log.warning("mailing %s not started: %s", mailing_id, exc)
        return True
    return False


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
    if mailing.resend_of_id is not None:
        counts = materialise_resend(mailing)
    else:
        counts = audience.materialise(mailing)
    now = utcnow()
    from app.services import ab_tests, windows

    ab_tests.assign(mailing)  # every Planned recipient in one variant or held, in this transaction
    windows.assign(mailing, now)  # local delivery: each one's release time by its contact's zone
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


@dataclass(frozen=True)
class ResumeCheck:
    refusal: str | None  # why resuming now would fail and what to do; None: it may resume
    remaining: int  # recipients still Planned or Deferred


def remaining(mailing_id: int) -> int:
    """Recipients a resume would still send to (Planned, or Deferred awaiting a retry)."""
    return int(db.session.execute(
        select(func.count()).select_from(Recipient)
        .where(Recipient.mailing_id == mailing_id,
               Recipient.response.in_([Response.PLANNED.value, Response.DEFERRED.value]))
    ).scalar_one())


def relay_problem() -> str | None:
    """Try a connection (and login) to the SMTP server mail goes out through: why it fails, or
    None when it answers. Nothing is sent."""
    from dataclasses import replace

    from app.providers.smtp import ConnectionLost, SmtpTransport

    smtp, _, _ = sending.provider_settings()
    transport = SmtpTransport(replace(smtp, timeout=min(smtp.timeout, 5.0)))
    try:
        transport.open()
    except ConnectionLost as exc:
        return str(exc)
    finally:
        transport.close()
    return None


def resume_check(mailing: Mailing, probe: Any = None, now: datetime | None = None) -> ResumeCheck:
    """Whether the cause of the interruption still holds: a monthly quota still spent, or (when
    the relay stopped it) an SMTP server that still cannot be reached (`probe`, relay_problem
    by default, is only called then)."""
    now = now or utcnow()
    cause = interruptions.cause_of(mailing.status_reason)
    quota = int(settings.get("monthly_quota")) or None
    left = sending.quota_remaining(now)
    problem = None
    if cause is interruptions.Cause.RELAY and not (quota is not None and left == 0):
        problem = (probe or relay_problem)()
    refusal = interruptions.resume_refusal(cause, quota=quota, quota_left=left, now=now,
                                           relay_problem=problem)
    return ResumeCheck(refusal=refusal, remaining=remaining(mailing.id))


def resume(mailing: Mailing, probe: Any = None) -> int:
    """Interrupted -> Sending: continue with the recipients still Planned, nobody twice.
    Refused (MailingError with the reason and what to do) while the cause still holds; returns
    how many recipients remain."""
    _act(mailing, Action.RESUME)
    check = resume_check(mailing, probe)
    if check.refusal:
        raise MailingError(f"Not resumed: {check.refusal}")
    new = _act(mailing, Action.RESUME)
    mailing.status = new.value
    mailing.status_reason = ""
    _end_interruption(mailing, utcnow())
    db.session.commit()
    sending.clear_stop_flag(mailing.id)
    from jobs.enqueue import kick_sending

    kick_sending()
    return check.remaining


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
    from app.services import ab_tests

    ab_tests.copy_setup(mailing, clone)  # the A/B variants, send window and local delivery
    db.session.flush()
    return clone


def delete_mailing(mailing: Mailing) -> None:
    """Only a Draft can be deleted; its later chain steps go with it (the chain_parent_id
    foreign key cascades)."""
    _act(mailing, Action.DELETE)
    db.session.delete(mailing)
    db.session.flush()


# ---------------------------------------------------------------- resend to part of the audience

RESEND_AUDIENCES = {
    "non_openers": "people who did not open it",
    "deferred_soft": "recipients deferred or soft-bounced",
}
# Accepted by the server: the ones a non-opener is looked for among (bounced mail was not read,
# and a complaint or an unsubscribe is an answer).
_ACCEPTED = (Response.SENT.value, Response.DELIVERED.value, Response.OPENED.value,
             Response.CLICKED.value)


def _resend_condition(kind: str) -> Any:
    if kind == "non_openers":
        # People only: an open or click flagged as a machine's (a privacy proxy, a link scanner)
        # leaves the recipient a non-opener.
        return ((Recipient.handed_off_at.is_not(None))
                & Recipient.response.in_(_ACCEPTED)
                & (Recipient.opens == Recipient.machine_opens)
                & (Recipient.clicks == Recipient.machine_clicks))
    if kind == "deferred_soft":
        return Recipient.response.in_([Response.DEFERRED.value, Response.SOFT_BOUNCE.value])
    raise MailingError(f"send again to whom? one of {', '.join(RESEND_AUDIENCES)}")


def resend(parent: Mailing, kind: str, *, owner_id: int | None,
           subject: str | None = None) -> Mailing:
    """A new Draft linked to a Sent mailing, with the same content (the subject may change),
    whose audience is a snapshot taken now of the parent's recipients of one kind: the contacts
    are written as its recipients at once and never re-read from the parent. Eligibility (do not
    email, unsubscribed, invalid, inactive, suppressed) is decided again when it is sent."""
    condition = _resend_condition(kind)
    if parent.status != Status.SENT.value:
        raise MailingError("Only a sent mailing can be sent again to part of its recipients.")
    values = {k: getattr(parent, k) for k in EDITABLE
              if k not in ("owner_id", "send_until", "chain_delay_days", "chain_condition")}
    if subject is not None:
        values["subject"] = subject.strip()[:500] or parent.subject
    _check_content({"subject": values["subject"]})
    label = "non-openers" if kind == "non_openers" else "deferred and soft-bounced"
    again = Mailing(status=Status.DRAFT.value, owner_id=owner_id, resend_of_id=parent.id,
                    resend_audience=kind,
                    **{**values, "name": f"{parent.name} (again to {label})"[:200]})
    db.session.add(again)
    db.session.flush()
    now = utcnow()
    snapshot = (
        select(literal(again.id), Recipient.contact_id, Contact.email,
               literal(Response.PLANNED.value), literal(now), literal(0), literal(0), literal(0),
               literal(0), literal(False), literal(""))
        .join(Contact, Contact.id == Recipient.contact_id)
        .where(Recipient.mailing_id == parent.id, condition)
        .distinct()
    )
    db.session.execute(Recipient.__table__.insert().from_select(
        ["mailing_id", "contact_id", "address", "response", "response_at", "opens", "clicks",
         "machine_opens", "machine_clicks", "crash_unknown", "detail"], snapshot))
    if not resend_size(again):
        raise MailingError(f"Nobody to send again to: {parent.name} has no "
                           f"{RESEND_AUDIENCES[kind]}.")
    return again


def resend_size(mailing: Mailing) -> int:
    """The contacts in a resend's snapshot."""
    return int(db.session.execute(
        select(func.count()).select_from(Recipient).where(Recipient.mailing_id == mailing.id)
    ).scalar_one())


def _snapshot_members(mailing: Mailing, up_to: int | None = None) -> Any:
    RT = Recipient.__table__
    where = [RT.c.mailing_id == mailing.id, RT.c.contact_id.is_not(None)]
    if up_to is not None:
        where.append(RT.c.id <= up_to)
    return (select(RT.c.contact_id.label("contact_id"), literal(1).label("rank"))
            .where(*where).subquery("members"))


def resend_preview(mailing: Mailing) -> dict[str, int]:
    """What a resend's snapshot gives if sent now: recipients per response, without writing."""
    members = _snapshot_members(mailing)
    response = audience._response_expr(mailing, members, utcnow()).label("response")
    inner = (select(response, Contact.email.label("email"))
             .select_from(members.join(Contact, Contact.id == members.c.contact_id))
             .subquery())
    counts = {r: int(n) for r, n in db.session.execute(
        select(inner.c.response, func.count()).group_by(inner.c.response))}
    suppressed = _suppressed_hashes()
    if suppressed and counts.get(Response.PLANNED.value):
        hits = sum(1 for (address,) in db.session.execute(
            select(inner.c.email).where(inner.c.response == Response.PLANNED.value))
            if email_hash(address) in suppressed)
        if hits:
            counts[Response.PLANNED.value] -= hits
            counts[Response.DO_NOT_EMAIL.value] = counts.get(Response.DO_NOT_EMAIL.value, 0) + hits
            counts = {k: v for k, v in counts.items() if v}
    return counts


def _suppressed_hashes() -> set[str]:
    return set(db.session.execute(select(Suppression.email_hash)).scalars())


def email_hash(address: str) -> str:
    return hashlib.sha256(address_key(address).encode()).hexdigest()


def materialise_resend(mailing: Mailing) -> dict[str, int]:
    """A resend's recipients from its snapshot, eligibility decided now by the same rules as any
    audience (app.services.audience), in the caller's transaction. The snapshot rows are replaced
    by rows carrying their response; a contact erased since is gone from the snapshot (its row
    lost its contact), and an address on the suppression list is not sent."""
    RT = Recipient.__table__
    now = utcnow()
    from app.models import MailingCounter

    db.session.execute(delete(MailingCounter).where(MailingCounter.mailing_id == mailing.id))
    up_to = db.session.execute(
        select(func.max(RT.c.id)).where(RT.c.mailing_id == mailing.id)).scalar_one() or 0
    members = _snapshot_members(mailing, up_to)
    response = audience._response_expr(mailing, members, now)
    source = (
        select(literal(mailing.id), Contact.id, Contact.email, response, literal(now),
               literal(0), literal(0), literal(0), literal(0), literal(False), literal(""))
        .select_from(members.join(Contact, Contact.id == members.c.contact_id))
        .order_by(Contact.id)
    )
    db.session.execute(RT.insert().from_select(
        ["mailing_id", "contact_id", "address", "response", "response_at", "opens", "clicks",
         "machine_opens", "machine_clicks", "crash_unknown", "detail"], source))
    db.session.execute(delete(RT).where(RT.c.mailing_id == mailing.id, RT.c.id <= up_to))
    suppressed = _suppressed_hashes()
    if suppressed:
        hits = [rid for rid, address in db.session.execute(
            select(RT.c.id, RT.c.address).where(RT.c.mailing_id == mailing.id,
                                                RT.c.response == Response.PLANNED.value))
            if email_hash(address) in suppressed]
        if hits:
            db.session.execute(update(RT).where(RT.c.id.in_(hits))
                               .values(response=Response.DO_NOT_EMAIL.value))
    counts = {row[0]: int(row[1]) for row in db.session.execute(
        select(RT.c.response, func.count()).where(RT.c.mailing_id == mailing.id)
        .group_by(RT.c.response))}
    deltas = {totals.response_key(k): v for k, v in counts.items()}
    deltas["recipients"] = sum(counts.values())
    deltas["eligible"] = counts.get(Response.PLANNED.value, 0)
    totals.bump(mailing.id, deltas)
    return counts


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

"""Follow-up steps: a step goes out N days after its parent was sent, to all, openers or
non-openers among the parent's recipients."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Mailing


def steps_of(mailing: Mailing) -> list[Mailing]:
    """The direct follow-up steps of a mailing."""
    return list(db.session.execute(
        select(Mailing).where(Mailing.chain_parent_id == mailing.id).order_by(Mailing.id)
    ).scalars())


def later_steps(mailing: Mailing) -> list[Mailing]:
    """Every step after this one, nearest first."""
    found: list[Mailing] = []
    frontier = [mailing]
    while frontier:
        step = frontier.pop(0)
        children = steps_of(step)
        found.extend(children)
        frontier.extend(children)
    return found


def add_step(parent: Mailing, *, name: str, delay_days: int, condition: str,
             owner_id: int | None, **values: object) -> Mailing:
    """A follow-up Draft; it becomes Scheduled when its parent is sent."""
    from app.services.mailings import MailingError, create

    if delay_days < 0:
        raise MailingError("a follow-up step is sent 0 or more days after its parent")
    step = create(owner_id=owner_id, name=name, chain_delay_days=delay_days,
                  chain_condition=condition, **values)  # type: ignore[arg-type]
    step.chain_parent_id = parent.id
    step.chain_step = parent.chain_step + 1
    step.email_type_id = step.email_type_id or parent.email_type_id
    db.session.commit()
    return step


def on_parent_sent(mailing_id: int) -> None:
    """Schedule the draft steps of a mailing that was just sent."""
    parent = db.session.get(Mailing, mailing_id)
    if parent is None or parent.finished_at is None:
        return
    for step in steps_of(parent):
        if step.status == Status.DRAFT.value:
            step.send_at = parent.finished_at + timedelta(days=step.chain_delay_days)
            step.send_at_zone = parent.send_at_zone or "UTC"
            step.status = Status.SCHEDULED.value
    db.session.commit()


def on_step_interrupted(mailing_id: int) -> None:
    """An interrupted or canceled step sends its later steps back to Draft."""
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        return
    for step in later_steps(mailing):
        if step.status == Status.SCHEDULED.value:
            step.status = Status.DRAFT.value
            step.send_at = None
    db.session.commit()

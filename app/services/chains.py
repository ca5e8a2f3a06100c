"""Follow-up steps: a step goes out N days after its parent finished (0: right after it), to all,
openers or non-openers among the parent's recipients (timing rules in app.domain.chains).

A step is scheduled when its parent finishes, or at once when it is added to a parent already
sent. Either way it must pass the checks of Send now (an unsubscribe link in every body, content
that builds): a step that fails them stays a Draft with the reason on its page. A step whose time
has already passed is not scheduled into the past: its page offers to send it now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from app.domain import chains as rules
from app.domain.lifecycle import Action, Status, transition
from app.domain.schedule import local_display
from app.extensions import db
from app.models import Mailing, utcnow


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
             owner_id: int | None, now: datetime | None = None, **values: object) -> Mailing:
    """A follow-up step. Added to a parent already sent, it is scheduled at once from the
    parent's finish (or left due, waiting for "send now", when that time has passed); otherwise
    it waits as a Draft for its parent to finish. Not committed: the caller commits."""
    from app.services.mailings import MailingError, new_draft

    try:
        rules.check_delay(delay_days)
    except rules.StepDelayError as exc:
        raise MailingError(str(exc)) from exc
    step = new_draft(owner_id=owner_id, name=name, chain_delay_days=delay_days,
                     chain_condition=condition, **values)  # type: ignore[arg-type]
    step.chain_parent_id = parent.id
    step.chain_step = parent.chain_step + 1
    step.email_type_id = step.email_type_id or parent.email_type_id
    if parent.status == Status.SENT.value and parent.finished_at is not None:
        schedule_step(step, parent, now or utcnow())
    db.session.flush()
    return step


def schedule_step(step: Mailing, parent: Mailing, now: datetime) -> bool:
    """Schedule a Draft step from its parent's finish; True when it was scheduled. A step that
    fails the checks of Send now stays a Draft with the reason; one whose time has passed stays
    a Draft too, due (see `plan`)."""
    from app.services.mailings import send_problem

    if parent.finished_at is None or step.status != Status.DRAFT.value:
        return False
    timing = rules.step_time(parent.finished_at, step.chain_delay_days, now)
    if timing.overdue:
        step.status_reason = ""
        return False
    problem = send_problem(step)
    if problem:
        step.status_reason = f"Not scheduled when {parent.name} finished: {problem}"
        return False
    step.send_at = timing.send_at
    step.send_at_zone = parent.send_at_zone or "UTC"
    step.status = transition(Status.DRAFT, Action.SCHEDULE, now=now).value
    step.status_reason = ""
    return True


def on_parent_sent(mailing_id: int) -> None:
    """Schedule the draft steps of a mailing that was just sent. Called by the sending engine
    after it recorded the mailing Sent; this is its checkpoint, so it commits."""
    parent = db.session.get(Mailing, mailing_id)
    if parent is None or parent.finished_at is None:
        return
    for step in steps_of(parent):
        # Judged at the parent's finish: a 0-day step is due right then, not overdue.
        schedule_step(step, parent, parent.finished_at)
    db.session.commit()


def on_step_interrupted(mailing_id: int) -> None:
    """An interrupted or canceled step sends its later steps back to Draft. Called by the
    sending engine and by cancel after their own commit; commits likewise."""
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        return
    for step in later_steps(mailing):
        if step.status == Status.SCHEDULED.value:  # a cancel: allowed inside the lock window too
            step.status = transition(Status.SCHEDULED, Action.CANCEL, now=utcnow()).value
            step.send_at = None
    db.session.commit()


@dataclass(frozen=True)
class StepPlan:
    """What a step's page says about when it goes out."""

    text: str
    due: bool = False  # its time has passed: it goes out once staff confirm Send now
    problem: str = ""  # why it was not scheduled (the checks of Send now)


def plan(step: Mailing, parent: Mailing | None, now: datetime | None = None) -> StepPlan | None:
    if parent is None or step.chain_parent_id is None:
        return None
    now = now or utcnow()
    if step.status == Status.SCHEDULED.value and step.send_at is not None:
        return StepPlan(f"Goes out {local_display(step.send_at, step.send_at_zone or 'UTC')}, "
                        f"{rules.plan_text(step.chain_delay_days)}.")
    if step.status != Status.DRAFT.value:
        return None
    if parent.status == Status.SENT.value and parent.finished_at is not None:
        timing = rules.step_time(parent.finished_at, step.chain_delay_days, now)
        if timing.overdue:
            return StepPlan(
                f"Due since {local_display(timing.send_at, parent.send_at_zone or 'UTC')}: "
                f"{parent.name} finished {local_display(parent.finished_at, 'UTC')} and this "
                f"step goes {rules.plan_text(step.chain_delay_days)}. It is not sent by itself: "
                "use Send now to send it now.", due=True, problem=step.status_reason)
        return StepPlan("Not scheduled yet.", problem=step.status_reason)
    return StepPlan(f"Goes out {rules.plan_text(step.chain_delay_days)}; scheduled then, if it "
                    "passes the checks of Send now.", problem=step.status_reason)

"""A/B tests of a mailing's subject and from-name: setup, the split, the winner, the figures.

- The editor stores 2-4 variants (subject and from-name each), the share of the eligible audience
  that tests, the wait and the metric (`save_setup`).
- Preparing splits the Planned recipients in the same transaction that writes them (`assign`):
  every one of them is in exactly one variant or in the remainder, which is held (release time
  `windows.HELD`) so the engine claims none of it. The split is app.domain.variants.split over
  contact ids, so it is exact and always the same for the same audience.
- After the wait (from the last test message handed over), the periodic job `decide_due` picks
  the variant with the best human open (or click) rate; staff can pick one earlier (`pick`).
  Deciding gives the remainder the winner's variant and releases it (at each contact's local
  time with local delivery).

See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update

from app.domain import variants as rules
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db
from app.models import Mailing, MailingVariant, Recipient, utcnow
from app.services import windows

RT = Recipient.__table__
CHUNK = 500
DECIDABLE = (Status.SENDING.value, Status.SENT.value)


class AbSetupError(ValueError):
    """An A/B setup or a winner pick that was refused; the message says why."""


def variants_of(mailing_id: int) -> list[MailingVariant]:
    return list(db.session.execute(
        select(MailingVariant).where(MailingVariant.mailing_id == mailing_id)
        .order_by(MailingVariant.position)
    ).scalars())


def active(mailing: Mailing) -> bool:
    """Does this mailing test variants?"""
    return bool(mailing.ab_share) and len(variants_of(mailing.id)) >= rules.MIN_VARIANTS


# ------------------------------------------------------------------------- the editor


def _number(raw: Any, what: str) -> int:
    text = str(raw if raw is not None else "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise AbSetupError(f"{what} must be a whole number")
    return int(text)


def save_setup(mailing: Mailing, form: Mapping[str, Any]) -> None:
    """Store the A/B setup posted by the editor (not committed). Fields: ab ("on"), ab_share
    (percent), ab_wait_minutes, ab_metric (open|click), variant_subject_N and variant_from_N for
    N = 0..3 (a variant with a blank subject is left out). Raises AbSetupError."""
    from app.services.rendering import TemplateProblem, check_template

    given: list[tuple[str, str]] = []
    for n in range(rules.MAX_VARIANTS):
        subject = str(form.get(f"variant_subject_{n}", "") or "").strip()[:500]
        from_name = str(form.get(f"variant_from_{n}", "") or "").strip()[:200]
        if subject:
            given.append((subject, from_name))
        elif from_name:
            raise AbSetupError(f"variant {rules.letter(n)} has a from-name but no subject")
    enabled = form.get("ab") in ("on", "y", "1", "true")
    if enabled:
        share = _number(form.get("ab_share"), "The test share")
        wait = _number(form.get("ab_wait_minutes"), "The wait")
        metric = str(form.get("ab_metric", "open"))[:10]
        try:
            rules.check_setup(len(given), share, wait, metric)
        except rules.VariantError as exc:
            raise AbSetupError(str(exc)) from exc
        for n, (subject, _) in enumerate(given):
            try:
                check_template(subject, f"Variant {rules.letter(n)} subject")
            except TemplateProblem as exc:
                raise AbSetupError(str(exc)) from exc
        mailing.ab_share, mailing.ab_wait_minutes, mailing.ab_metric = share, wait, metric
    else:
        mailing.ab_share = 0
    existing = {v.position: v for v in variants_of(mailing.id)}
    for n, (subject, from_name) in enumerate(given):
        row = existing.pop(n, None)
        if row is None:
            db.session.add(MailingVariant(mailing_id=mailing.id, position=n, subject=subject,
                                          from_name=from_name))
        else:
            row.subject, row.from_name = subject, from_name
    for row in existing.values():
        db.session.delete(row)
    mailing.ab_winner_id, mailing.ab_decided_at, mailing.ab_decided_by = None, None, ""
    db.session.flush()


def copy_setup(source: Mailing, clone: Mailing) -> None:
    """A copy keeps the A/B variants and setup, the send window and local delivery (not the
    winner); not committed."""
    clone.ab_share, clone.ab_wait_minutes = source.ab_share, source.ab_wait_minutes
    clone.ab_metric = source.ab_metric
    clone.window_start_minute = source.window_start_minute
    clone.window_end_minute = source.window_end_minute
    clone.window_days, clone.local_delivery = source.window_days, source.local_delivery
    for v in variants_of(source.id):
        db.session.add(MailingVariant(mailing_id=clone.id, position=v.position,
                                      subject=v.subject, from_name=v.from_name))
    db.session.flush()


def for_freeze(mailing: Mailing) -> list[tuple[int, str, str]]:
    """(variant id, subject, from-name) of each variant, for the frozen version; empty when
    the mailing does not test. A blank from-name is the mailing's own."""
    if not active(mailing):
        return []
    return [(v.id, v.subject, v.from_name or mailing.from_name) for v in variants_of(mailing.id)]


# ------------------------------------------------------------------------- preparing


def assign(mailing: Mailing) -> dict[int, int]:
    """Split the Planned recipients among the variants and hold the remainder, in the caller's
    (the preparation's) transaction. Returns recipients per variant id (0: the remainder)."""
    if not active(mailing):
        return {}
    chosen = variants_of(mailing.id)
    rows = db.session.execute(
        select(RT.c.id, RT.c.contact_id)
        .where(RT.c.mailing_id == mailing.id, RT.c.response == Response.PLANNED.value)
    ).all()
    by_key: dict[int, list[int]] = {}
    for rid, contact_id in rows:
        # A contact reached twice (duplicates allowed) is in one group with both its rows.
        by_key.setdefault(contact_id if contact_id is not None else -rid, []).append(rid)
    groups, _ = rules.split(by_key, seed=f"mailing-{mailing.id}", share=mailing.ab_share,
                            variant_count=len(chosen))
    result: dict[int, int] = {}
    for variant, keys in zip(chosen, groups, strict=True):
        ids = [rid for key in keys for rid in by_key[key]]
        for at in range(0, len(ids), CHUNK):
            db.session.execute(update(RT).where(RT.c.id.in_(ids[at:at + CHUNK]))
                               .values(variant_id=variant.id))
        result[variant.id] = len(ids)
    held = int(db.session.execute(
        update(RT).where(RT.c.mailing_id == mailing.id, RT.c.response == Response.PLANNED.value,
                         RT.c.variant_id.is_(None))
        .values(release_at=windows.HELD)
    ).rowcount or 0)
    result[0] = held
    return result


# ------------------------------------------------------------------------- the winner


@dataclass(frozen=True)
class VariantRow:
    variant: MailingVariant
    letter: str
    recipients: int
    sent: int
    opened: int
    clicked: int
    machine_opened: int
    open_rate: str
    click_rate: str
    winner: bool


def _test_figures(mailing: Mailing) -> dict[int, tuple[int, int, int, int, int]]:
    """Per variant id: recipients, sent, human openers, human clickers, machine-only openers.
    Once decided, the winner's remainder (released at or after the decision) is left out."""
    in_test = RT.c.variant_id.is_not(None)
    if mailing.ab_winner_id is not None and mailing.ab_decided_at is not None:
        remainder = (RT.c.variant_id == mailing.ab_winner_id) & RT.c.release_at.is_not(None) & (
            RT.c.release_at >= mailing.ab_decided_at)
        in_test = in_test & ~remainder

    def flag(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    sent = RT.c.handed_off_at.is_not(None)
    rows = db.session.execute(
        # `opens` and `clicks` count machines' too: a person is one more than the machines.
        select(RT.c.variant_id, func.count(), flag(sent),
               flag(sent & (RT.c.opens > RT.c.machine_opens)),
               flag(sent & (RT.c.clicks > RT.c.machine_clicks)),
               flag(sent & (RT.c.opens <= RT.c.machine_opens) & (RT.c.machine_opens > 0)))
        .where(RT.c.mailing_id == mailing.id, in_test)
        .group_by(RT.c.variant_id)
    ).all()
    return {int(r[0]): (int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0),
                        int(r[5] or 0)) for r in rows}


def figures(mailing: Mailing) -> list[VariantRow]:
    """Each variant's test figures, for the mailing page."""
    counts = _test_figures(mailing)
    result = []
    for v in variants_of(mailing.id):
        recipients, sent, opened, clicked, machine = counts.get(v.id, (0, 0, 0, 0, 0))
        f = rules.VariantFigures(v.position, sent, opened, clicked)
        result.append(VariantRow(v, rules.letter(v.position), recipients, sent, opened, clicked,
                                 machine, rules.percent(f.rate("open")),
                                 rules.percent(f.rate("click")), v.id == mailing.ab_winner_id))
    return result


def best(mailing: Mailing) -> MailingVariant:
    """The variant the rules pick from the figures so far."""
    counts = _test_figures(mailing)
    chosen = variants_of(mailing.id)
    stats = [rules.VariantFigures(v.position, *counts.get(v.id, (0, 0, 0, 0, 0))[1:4])
             for v in chosen]
    position = rules.winner(stats, mailing.ab_metric or "open")
    return next(v for v in chosen if v.position == position)


def _remainder(mailing: Mailing) -> Any:
    return ((RT.c.mailing_id == mailing.id) & (RT.c.response == Response.PLANNED.value)
            & RT.c.variant_id.is_(None))


def decide(mailing: Mailing, variant: MailingVariant, by: str, now: datetime) -> bool:
    """Record the winner once (a conditional UPDATE: a second decision changes nothing) and
    release the remainder with it, in the caller's transaction."""
    changed = db.session.execute(
        update(Mailing).where(Mailing.id == mailing.id, Mailing.ab_winner_id.is_(None))
        .values(ab_winner_id=variant.id, ab_decided_at=now, ab_decided_by=by)
    ).rowcount
    if not changed:
        return False
    # Released at the decision (or later, at each contact's local time): a release time at or
    # after the decision marks the remainder, which the test figures leave out.
    where = _remainder(mailing)
    if mailing.local_delivery:
        windows.set_local_release(mailing, where, now, passed=now)
    else:
        db.session.execute(update(RT).where(where).values(release_at=now))
    db.session.execute(update(RT).where(where).values(variant_id=variant.id))
    db.session.refresh(mailing)
    return True


def due_at(mailing: Mailing) -> datetime | None:
    """When the automatic decision is due: the wait after the last test message handed over;
    None while test recipients are still to be sent (or nothing started)."""
    if mailing.started_at is None:
        return None
    waiting = db.session.execute(
        select(RT.c.id).where(RT.c.mailing_id == mailing.id, RT.c.variant_id.is_not(None),
                              RT.c.response == Response.PLANNED.value).limit(1)
    ).first()
    if waiting is not None:
        return None
    last = db.session.execute(
        select(func.max(RT.c.handed_off_at))
        .where(RT.c.mailing_id == mailing.id, RT.c.variant_id.is_not(None))
    ).scalar_one_or_none()
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=mailing.started_at.tzinfo)
    start = max(last or mailing.started_at, mailing.started_at)
    return start + timedelta(minutes=mailing.ab_wait_minutes or 0)


def decide_due(now: datetime | None = None) -> list[int]:
    """Decide every test whose wait is over (the periodic job); returns the mailings decided.
    Commits each decision (it runs as a job, outside any view)."""
    now = now or utcnow()
    ids = db.session.execute(
        select(Mailing.id).where(Mailing.ab_share > 0, Mailing.ab_winner_id.is_(None),
                                 Mailing.status.in_(DECIDABLE), Mailing.started_at.is_not(None))
        .order_by(Mailing.id)
    ).scalars().all()
    decided = []
    for mailing_id in ids:
        mailing = db.session.get(Mailing, mailing_id)
        if mailing is None or not active(mailing):
            continue
        due = due_at(mailing)
        if due is None or now < due:
            continue
        if decide(mailing, best(mailing), "auto", now):
            decided.append(mailing_id)
        db.session.commit()
    return decided


def pick(mailing: Mailing, variant_id: int | None, now: datetime | None = None) -> MailingVariant:
    """Staff pick the winner (before the wait is over); not committed. AbSetupError if the
    mailing does not test, is not sending, is decided already or the variant is not its own."""
    if not active(mailing):
        raise AbSetupError("this mailing does not test variants")
    if mailing.ab_winner_id is not None:
        raise AbSetupError("the winner is already chosen")
    if mailing.status not in (*DECIDABLE, Status.INTERRUPTED.value):
        raise AbSetupError("a winner can be picked once sending has started")
    chosen = next((v for v in variants_of(mailing.id) if v.id == variant_id), None)
    if chosen is None:
        raise AbSetupError("pick one of this mailing's variants")
    if not decide(mailing, chosen, "staff", now or utcnow()):
        raise AbSetupError("the winner is already chosen")
    return chosen


def held(mailing_id: int) -> int:
    """Recipients held for the winner."""
    return int(db.session.execute(
        select(func.count()).select_from(RT)
        .where(RT.c.mailing_id == mailing_id, RT.c.response == Response.PLANNED.value,
               RT.c.variant_id.is_(None), RT.c.release_at == windows.HELD)
    ).scalar_one())


def page_facts(mailing: Mailing) -> dict[str, Any]:
    """What the editor and the mailing page show of the test."""
    chosen = variants_of(mailing.id)
    started = mailing.started_at is not None
    winner = next((v for v in chosen if v.id == mailing.ab_winner_id), None)
    return {
        "enabled": bool(mailing.ab_share) and len(chosen) >= rules.MIN_VARIANTS,
        "variants": chosen,
        "slots": [(n, rules.letter(n), chosen[n] if n < len(chosen) else None)
                  for n in range(rules.MAX_VARIANTS)],
        "share": mailing.ab_share or 20,
        "wait": mailing.ab_wait_minutes or 240,
        "metric": mailing.ab_metric or "open",
        "rows": figures(mailing) if started and mailing.ab_share else [],
        "winner": winner,
        "winner_letter": rules.letter(winner.position) if winner else "",
        "decided_by": mailing.ab_decided_by,
        "decided_at": mailing.ab_decided_at,
        "held": held(mailing.id) if started and mailing.ab_share else 0,
        "due_at": due_at(mailing) if started and mailing.ab_share and winner is None else None,
        "can_pick": started and winner is None and bool(mailing.ab_share)
        and mailing.status in (*DECIDABLE, Status.INTERRUPTED.value),
    }


__all__ = ["AbSetupError", "active", "assign", "copy_setup", "decide", "decide_due", "figures", "for_freeze",
           "page_facts", "pick", "save_setup", "variants_of"]


def setup_summary(mailing: Mailing) -> str:
    """What an audit entry says of a mailing's A/B test and send window setup."""
    parts = []
    if mailing.ab_share:
        parts.append(f"A/B test of {len(variants_of(mailing.id))} variants, "
                     f"{mailing.ab_share}% tests, winner by {mailing.ab_metric} rate after "
                     f"{mailing.ab_wait_minutes} minutes")
    window = windows.window_of(mailing)
    if window is not None:
        from app.domain.windows import describe

        parts.append(f"window {describe(window)} {windows.org_zone()}")
    if mailing.local_delivery:
        parts.append("local delivery")
    return "; ".join(parts) or "no A/B test, no window"

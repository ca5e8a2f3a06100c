"""Before a mailing is sent or scheduled: build its message for a few recipients of its audience
(or a preview contact) so content that cannot be built for anyone is refused with the error,
rather than found at send time (docs/ARCHITECTURE.md, "Sending")."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Contact, Mailing, utcnow
from app.services.rendering import MessageBuilder, TemplateProblem, freeze, merge_data

SAMPLE = 5  # recipients of the audience whose message is built before sending
PREVIEW = ("Preview", "preview@example.org", {})  # when the audience has no one to sample yet


def _samples(mailing: Mailing) -> list[tuple[str, str, dict[str, object]]]:
    from app.extensions import db
    from app.services.audience import _members

    members = _members(mailing, utcnow())
    rows = db.session.execute(
        select(Contact.name, Contact.email, Contact.fields)
        .where(Contact.id.in_(select(members.c.contact_id)))
        .order_by(Contact.id).limit(SAMPLE)
    ).all()
    return [(r.name or "", r.email, dict(r.fields or {})) for r in rows] or [PREVIEW]


def problem(mailing: Mailing) -> str | None:
    """Why the mailing's message cannot be built, when it fails for every sampled recipient;
    None when at least one builds (a few bad contacts are Delivery errors at send time)."""
    from flask import current_app

    try:
        content = freeze(mailing, link_ids={}, base_url=current_app.config["BASE_URL"],
                         bounce_domain=current_app.config["BOUNCE_DOMAIN"])
        builder = MessageBuilder(content)
    except TemplateProblem as exc:
        return str(exc)
    errors = []
    for name, address, fields in _samples(mailing):
        try:
            builder.build(merge=merge_data(name, address, fields), address=address,
                          token="check", message_id=f"check@{content['domain']}",
                          sent_at=utcnow())
        except TemplateProblem as exc:
            errors.append(f"for {address}: {exc}")
            continue
        return None
    return errors[0] if errors else None

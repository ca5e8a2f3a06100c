"""Freezing a mailing's template when sending starts: tracked links and a MailingVersion."""

from __future__ import annotations

import html
from typing import Any

from flask import current_app
from sqlalchemy import delete

from app.extensions import db
from app.models import Mailing, MailingVersion, TrackedLink
from app.services import ab_tests
from app.services.rendering import collect_links, freeze, with_utm


def type_options(mailing: Mailing) -> dict[str, Any]:
    """What the mailing's email type changes in its messages (its name, and no List-Unsubscribe
    when it is marked transactional): the keyword arguments of rendering.freeze, the same for
    the real send and a test send."""
    kind = mailing.email_type
    return {"email_type_name": kind.name if kind else "",
            "transactional": bool(kind and kind.transactional)}


def freeze_version(mailing: Mailing) -> MailingVersion:
    """Record the links and the template every recipient of this send is rendered from."""
    db.session.execute(delete(TrackedLink).where(TrackedLink.mailing_id == mailing.id))
    utm = {"source": mailing.utm_source, "medium": mailing.utm_medium,
           "campaign": mailing.utm_campaign}
    link_ids: dict[str, int] = {}
    for position, raw in enumerate(collect_links(mailing.html_body or "")):
        link = TrackedLink(mailing_id=mailing.id, url=with_utm(html.unescape(raw), utm),
                           position=position)
        db.session.add(link)
        db.session.flush()
        link_ids[raw] = link.id
    cfg = current_app.config
    content = freeze(
        mailing, link_ids=link_ids, base_url=cfg["BASE_URL"], bounce_domain=cfg["BOUNCE_DOMAIN"],
        variants=ab_tests.for_freeze(mailing), **type_options(mailing),
    )
    version = MailingVersion(mailing_id=mailing.id, content=content)
    db.session.add(version)
    db.session.flush()
    return version

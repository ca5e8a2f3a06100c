"""A client's email history, the exact message each recipient received, and the inert copies of
messages that staff look at (no open pixel, no tracked link: see app.domain.inert)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.domain.inert import click_link_ids, inert_html, inert_text
from app.extensions import db
from app.models import MailingVersion, Recipient, TrackedLink
from app.services.rendering import builder_for
from app.services.tokens import read_recipient_token, recipient_token

if TYPE_CHECKING:
    from app.services.reports import MessageView

MAX_ID = 2**62


def rebuild_message(recipient: Recipient) -> bytes | None:
    """The message exactly as it was handed over, rebuilt from the frozen template version,
    the merge data stored at hand-off, its Message-ID and hand-off time; None if never sent."""
    if recipient.version_id is None or recipient.message_id is None:
        return None
    if recipient.handed_off_at is None or recipient.merge_data is None:
        return None
    version = db.session.get(MailingVersion, recipient.version_id)
    if version is None:
        return None
    builder = builder_for(version.id, version.content)
    return builder.build(
        merge=recipient.merge_data, address=recipient.address,
        token=recipient_token(recipient.id), message_id=recipient.message_id,
        sent_at=recipient.handed_off_at,
    ).data


def tracked_links(mailing_id: int | None, ids: Iterable[int] | None = None) -> dict[int, str]:
    """Link id -> target of a mailing's tracked links (only `ids` when given)."""
    if mailing_id is None:
        return {}
    stmt = select(TrackedLink.id, TrackedLink.url).where(TrackedLink.mailing_id == mailing_id)
    if ids is not None:
        wanted = [i for i in ids if 0 < i < MAX_ID]
        if not wanted:
            return {}
        stmt = stmt.where(TrackedLink.id.in_(wanted))
    return {link_id: url for link_id, url in db.session.execute(stmt)}


def inert_parts(html: str, text: str, mailing_id: int | None) -> tuple[str, str]:
    """The HTML and text parts as staff see them: the open pixel left out, tracked links pointing
    at their real targets (looked up among the mailing's links; unknown ones lose their href)."""
    ids = click_link_ids(html) | click_link_ids(text)
    links = tracked_links(mailing_id, ids) if ids else {}
    return inert_html(html, links), inert_text(text, links)


def message_view(recipient: Recipient) -> MessageView | None:
    """The message a recipient received, for staff: the raw source byte for byte, the HTML and
    text parts inert. None if nothing was handed off."""
    from app.services import reports

    data = rebuild_message(recipient)
    if data is None:
        return None
    view = reports.message_view(data)
    html, text = inert_parts(view.html, view.text, recipient.mailing_id)
    return dataclasses.replace(view, html=html, text=text)


def mailing_of_message(token: str | None) -> int | None:
    """The mailing a message was sent for, from its X-Sendboard-Rid token; None if unknown."""
    if not token or len(token) > 200:
        return None
    rid = read_recipient_token(token.strip())
    if rid is None or not 0 < rid < MAX_ID:
        return None
    recipient = db.session.get(Recipient, rid)
    return recipient.mailing_id if recipient is not None else None

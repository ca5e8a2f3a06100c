"""A client's email history, and the exact message each recipient received."""

from __future__ import annotations

from app.extensions import db
from app.models import MailingVersion, Recipient
from app.services.rendering import builder_for
from app.services.tokens import recipient_token


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

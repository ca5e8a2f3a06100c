"""A one-off email from staff to one contact, tracked like any mailing but not listed among them.

The message is a Mailing with ``one_off=True`` and exactly one recipient. Its template is frozen
the same way (so the exact message can be shown again in the contact's history) and it is handed
off by the same batch engine, which rechecks eligibility right before hand-off. The audience is
the one contact rather than lists, so the recipient row is written here instead of by
materialising lists; the mailing then enters the sending queue at its head: a reply to one client
should not wait behind a mailing to a million.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, select

from app.domain.lifecycle import Action, Status, transition
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, utcnow
from app.services import contacts, settings, totals
from app.services.rendering import TemplateProblem, check_template, merge_data, preview


class OneOffError(ValueError):
    """The one-off email cannot be sent; the message says why."""


def send_one_off(contact: Contact, *, owner_id: int | None, subject: str, text_body: str,
                 from_address: str, from_name: str = "", reply_to: str = "",
                 html_body: str = "") -> Mailing:
    """Create the one-off mailing with its single recipient and start sending it."""
    subject, from_address = subject.strip(), from_address.strip()
    if not subject:
        raise OneOffError("The email needs a subject.")
    if not (text_body.strip() or html_body.strip()):
        raise OneOffError("The email needs a message.")
    if "@" not in from_address:
        raise OneOffError("The email needs a from address.")
    if contact.do_not_email:
        raise OneOffError("This contact is marked do not email.")
    if not contact.valid:
        raise OneOffError("This contact's address is invalid.")
    days = int(settings.get("inactivity_days"))
    if contacts.is_inactive(contact, days):
        # The sender applies the same rule right before hand-off; say so now instead.
        raise OneOffError(f"This contact has had no transaction for {days} days, so mail to it"
                          " is held back. Record a transaction to lift that.")
    for source, what in ((subject, "Subject"), (text_body, "Message"), (html_body, "HTML")):
        try:
            check_template(source, what)
        except TemplateProblem as exc:
            raise OneOffError(f"The message cannot be used: {exc}") from exc
    shown_subject = _rendered_subject(contact, subject, text_body, html_body)
    mailing = start_single(
        # The name (what the contact's history lists) carries the subject as the contact
        # received it; the template itself is kept as the subject and frozen with the body.
        name=f"One-off to {contact.email}: {shown_subject}", contact_id=contact.id,
        address=contact.email, subject=subject, from_name=from_name.strip(),
        from_address=from_address, reply_to=reply_to.strip(), text_body=text_body,
        html_body=html_body, owner_id=owner_id,
    )
    # Committed here, before the worker is woken (docs/ARCHITECTURE.md, Layering): the worker
    # must find the mailing. The view commits its audit entry afterwards.
    db.session.commit()

    from app.services import sending
    from jobs.enqueue import kick_sending

    sending.clear_stop_flag(mailing.id)
    kick_sending()
    return mailing


def start_single(*, name: str, contact_id: int | None, address: str,
                 data: dict[str, Any] | None = None, **values: Any) -> Mailing:
    """A sending mailing of one recipient at the head of the sending queue, its template frozen
    (with `data`, the variables of this one message, if any). The caller commits, then has it
    sent (`kick_sending`, or the transactional queue); until then nothing leaves.

    Shared by staff one-off emails and transactional emails sent through the API: both are
    listed in the contact's history, tracked like any mailing and handed off by the batch engine,
    which checks eligibility once more right before hand-off.
    """
    from app.services.freeze import freeze_version

    now = utcnow()
    mailing = Mailing(name=name[:200], one_off=True, prevent_duplicates=False,
                      status=Status.DRAFT.value, **values)
    db.session.add(mailing)
    db.session.flush()
    version = freeze_version(mailing)
    if data:
        version.content = {**version.content, "data": data}
    db.session.add(Recipient(mailing_id=mailing.id, contact_id=contact_id, address=address,
                             response=Response.PLANNED.value, response_at=now))
    totals.bump(mailing.id, {totals.response_key(Response.PLANNED): 1, "recipients": 1,
                             "eligible": 1})
    preparing = transition(Status.DRAFT, Action.SEND_NOW, now=now)
    mailing.status = transition(preparing, Action.BEGIN_SENDING, now=now).value
    head = db.session.execute(
        select(func.min(Mailing.queued_at)).where(Mailing.status == Status.SENDING.value,
                                                  Mailing.id != mailing.id)
    ).scalar_one_or_none()
    mailing.started_at = now
    mailing.queued_at = min(head - timedelta(seconds=1), now) if head is not None else now
    db.session.flush()
    return mailing


def _rendered_subject(contact: Contact, subject: str, text_body: str, html_body: str) -> str:
    """The subject as this contact will read it; rendering the whole message once here also
    refuses, before anything is stored, a message that fails for this contact."""
    from app.services.mailings import base_url

    draft = SimpleNamespace(subject=subject, html_body=html_body, text_body=text_body,
                            from_address="")
    try:
        shown = preview(draft, merge_data(contact.name, contact.email, contact.fields),
                        base_url())
    except TemplateProblem as exc:
        raise OneOffError(f"The message cannot be used: {exc}") from exc
    return " ".join(shown["subject"].split())

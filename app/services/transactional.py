"""Transactional email: one message on request (a receipt, a password reset), sent at once.

The message is a one-off mailing (app.services.one_off.start_single): one recipient, a frozen
template, tracked like any mailing and listed in the contact's history. Its content comes from a
saved mailing used as a template, or from a subject and bodies given with the request; the
request's merge data is frozen with it. It goes to the head of the sending queue and gets a job
of its own on the ``transactional`` queue, which workers serve before bulk sending
(jobs/transactional.py), once the caller's transaction commits.

Who may receive it: app.domain.eligibility with the email type's ``transactional`` flag (only
do-not-email and an invalid address stop a transactional type; type opt-outs and the inactivity
hold do not), plus the suppression list: erased addresses, and bare addresses that hard-bounced
or complained before. A refusal is raised before anything is stored. An idempotency key makes a
retried request return the first one's result and never send a second message. See
docs/ARCHITECTURE.md, "Transactional email".

Nothing here commits: the caller (an API view, a test) commits once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain import eligibility
from app.domain import transactional as rules
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, EmailType, Mailing, Recipient, TypeOptOut, utcnow
from app.services import settings, suppressions
from app.services.rendering import MessageBuilder, TemplateProblem, check_template, merge_data


class TxError(ValueError):
    """The request cannot be sent. `field` names the part of the request at fault, `status` the
    HTTP status an API answers with, `refusal` why the recipient may not be mailed (if that is
    the reason)."""

    def __init__(self, message: str, *, field: str = "", status: int = 422,
                 refusal: rules.Refusal | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.refusal = refusal


@dataclass
class TxRequest:
    """One transactional email: to a contact (`contact_id`) or an address (`email`: the contact
    with that address, else a bare address), from a saved mailing (`mailing_id`) or from a
    subject with an HTML and/or text body."""

    contact_id: int | None = None
    email: str | None = None
    mailing_id: int | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    email_type_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    api_token_id: int | None = None


@dataclass(frozen=True)
class TxResult:
    mailing: Mailing
    recipient: Recipient
    replayed: bool  # True: the idempotency key was seen before; this is the first result

    @property
    def response(self) -> Response:
        return Response(self.recipient.response)

    @property
    def status(self) -> str:
        return rules.status_of(self.response)


# ---------------------------------------------------------------- sending


def send(req: TxRequest) -> TxResult:
    """Store the message at the head of the sending queue and have it sent once the caller
    commits; with an idempotency key seen before, the first result and nothing else."""
    key = req.idempotency_key
    if key is not None:
        problem = rules.key_problem(key)
        if problem:
            raise TxError(f"The idempotency key {problem}.", field="idempotency_key")
        _lock_for_write()
        earlier = _replay(key, req.api_token_id)
        if earlier is not None:
            return earlier
    contact, address, name = _recipient_of(req)
    content = _content_of(req)
    type_row = _email_type(content.pop("email_type_id"), req)
    _check_recipient(contact, address, type_row,
                     "to.contact_id" if req.contact_id is not None else "to.email")
    bad_data = rules.data_problem(req.data)
    if bad_data:
        bad, why = bad_data
        raise TxError(f"The merge data {why}.", field=f"data.{bad}" if bad else "data")
    fields = dict(contact.fields or {}) if contact is not None else {}
    merge = merge_data(name, address, fields)
    shown_subject = _render_check(content, merge, req.data)

    from app.services.one_off import start_single

    values = dict(content, email_type_id=type_row.id if type_row else None,
                  idempotency_key=key, api_token_id=req.api_token_id, owner_id=None)
    label = f"Transactional to {address}: {shown_subject}"
    if db.session.get_bind().dialect.name == "postgresql" and key is not None:
        # A concurrent request with the same key inserts first: ours fails on the unique key
        # (after waiting for theirs to commit) and theirs is the result.
        try:
            with db.session.begin_nested():
                mailing = start_single(name=label, contact_id=contact.id if contact else None,
                                       address=address, data=req.data or None, **values)
        except IntegrityError:
            earlier = _replay(key, req.api_token_id)
            if earlier is None:
                raise
            return earlier
    else:
        mailing = start_single(name=label, contact_id=contact.id if contact else None,
                               address=address, data=req.data or None, **values)
    recipient = db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing.id)).scalar_one()
    after_commit(functools.partial(dispatch, mailing.id))
    return TxResult(mailing, recipient, replayed=False)


def dispatch(mailing_id: int) -> None:
    """Queue the committed message on the transactional queue."""
    from app.services import sending
    from jobs import transactional as tx_jobs

    try:
        sending.clear_stop_flag(mailing_id)
    except Exception:  # noqa: BLE001 - Redis away: the tick sends it once Redis is back
        pass
    tx_jobs.enqueue(mailing_id)


def get(mailing_id: int, api_token_id: int | None = None) -> TxResult | None:
    """A transactional email sent earlier (by this token, when one is given)."""
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None or not mailing.one_off or mailing.api_token_id is None:
        return None
    if api_token_id is not None and mailing.api_token_id != api_token_id:
        return None
    recipient = db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing.id)).scalar_one_or_none()
    if recipient is None:
        return None
    return TxResult(mailing, recipient, replayed=False)


# ---------------------------------------------------------------- the steps


def _lock_for_write() -> None:
    """SQLite: take the write lock before looking the key up, so two requests with one key are
    served one after the other and the second finds the first (PostgreSQL: the unique key and a
    savepoint decide instead, see `send`)."""
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(text("UPDATE mailings SET id = id WHERE 0 = 1"))


def _replay(key: str, api_token_id: int | None) -> TxResult | None:
    mailing = db.session.execute(
        select(Mailing).where(Mailing.idempotency_key == key)).scalar_one_or_none()
    if mailing is None:
        return None
    if mailing.api_token_id != api_token_id:
        raise TxError("This idempotency key was used by another API token.",
                      field="idempotency_key", status=409)
    recipient = db.session.execute(
        select(Recipient).where(Recipient.mailing_id == mailing.id)).scalar_one()
    return TxResult(mailing, recipient, replayed=True)


def _recipient_of(req: TxRequest) -> tuple[Contact | None, str, str]:
    """(contact or None, address, name) of the request's recipient."""
    if (req.contact_id is None) == (req.email is None):
        raise TxError("Give the recipient as either a contact id or an email address.",
                      field="to")
    if req.contact_id is not None:
        contact = db.session.get(Contact, req.contact_id)
        if contact is None:
            raise TxError(f"There is no contact {req.contact_id}.", field="to.contact_id",
                          status=404)
        return contact, contact.email, contact.name or ""
    raw = (req.email or "").strip()
    problem = eligibility.address_problem(raw)
    if problem:
        raise TxError(f"The address cannot receive mail: {problem}.", field="to.email",
                      refusal=rules.Refusal.INVALID_ADDRESS)
    contact = db.session.execute(
        select(Contact).where(Contact.email_key == eligibility.address_key(raw))
    ).scalar_one_or_none()
    if contact is not None:
        return contact, contact.email, contact.name or ""
    return None, eligibility.normalize_address(raw), ""  # a bare address has no name


def _content_of(req: TxRequest) -> dict[str, Any]:
    """Subject, bodies, sender and email type: a saved mailing's, or the request's own."""
    content: dict[str, Any]
    given = {k: v for k, v in (("subject", req.subject), ("html", req.html), ("text", req.text))
             if v is not None}
    if req.mailing_id is not None:
        if given:
            raise TxError("Give either a mailing to use as the template or a subject and body,"
                          " not both.", field=next(iter(given)))
        template = db.session.get(Mailing, req.mailing_id)
        if template is None or template.one_off:
            raise TxError(f"There is no mailing {req.mailing_id}.", field="mailing_id",
                          status=404)
        content = {
            "subject": template.subject, "html_body": template.html_body or "",
            "text_body": template.text_body or "", "from_address": template.from_address,
            "from_name": template.from_name, "reply_to": template.reply_to,
            "email_type_id": template.email_type_id,
            "utm_source": template.utm_source, "utm_medium": template.utm_medium,
            "utm_campaign": template.utm_campaign,
        }
        where = "mailing_id"
    else:
        content = {
            "subject": (req.subject or "").strip(), "html_body": req.html or "",
            "text_body": req.text or "", "from_address": "", "from_name": "", "reply_to": "",
            "email_type_id": None,
        }
        where = ""
    for key, value in (("from_address", req.from_address), ("from_name", req.from_name),
                       ("reply_to", req.reply_to)):
        if value is not None:
            content[key] = value.strip()
    if req.email_type_id is not None:
        content["email_type_id"] = req.email_type_id
    if not content["subject"]:
        raise TxError("The email needs a subject.", field=where or "subject")
    if not (content["html_body"].strip() or content["text_body"].strip()):
        raise TxError("The email needs an HTML or a text body.", field=where or "text")
    if not content["from_address"]:
        raise TxError("The email needs a from address.", field="from_address")
    problem = eligibility.address_problem(content["from_address"])
    if problem:
        raise TxError(f"The from address is not valid: {problem}.", field="from_address")
    if content["reply_to"]:
        problem = eligibility.address_problem(content["reply_to"])
        if problem:
            raise TxError(f"The reply-to address is not valid: {problem}.", field="reply_to")
    if len(content["from_name"]) > 200:
        raise TxError("The from name is longer than 200 characters.", field="from_name")
    if len(content["subject"]) > 500:
        raise TxError("The subject is longer than 500 characters.", field=where or "subject")
    for key, what, name in (("subject", "Subject", "subject"), ("html_body", "HTML body", "html"),
                            ("text_body", "Text body", "text")):
        try:
            check_template(content[key], what)
        except TemplateProblem as exc:
            raise TxError(f"The template cannot be used: {exc}", field=where or name) from exc
    return content


def _email_type(type_id: int | None, req: TxRequest) -> EmailType | None:
    if type_id is None:
        return None
    row = db.session.get(EmailType, type_id)
    if row is None:
        raise TxError(f"There is no email type {type_id}.",
                      field="email_type_id" if req.email_type_id is not None else "mailing_id")
    return row


def _check_recipient(contact: Contact | None, address: str, email_type: EmailType | None,
                     field_name: str) -> None:
    """Refuse a recipient on the suppression list, or one the eligibility rules hold back.

    A bare address (no contact) that hard-bounced or complained before is do-not-email, as a
    contact would be; a contact's own flags decide for it (staff may have lifted them)."""
    listed = suppressions.reason_for(address)
    suppressed = listed == suppressions.ERASED
    verdict = None
    reason = ""
    if contact is None and listed in suppressions.CONTACT_REASON:
        verdict, reason = Response.DO_NOT_EMAIL, suppressions.CONTACT_REASON[listed]
    days = int(settings.get("inactivity_days"))
    transactional = bool(email_type and email_type.transactional)
    if contact is not None:
        opted_out: frozenset[int] = frozenset()
        if email_type is not None:
            left = db.session.execute(
                select(TypeOptOut.email_type_id).where(TypeOptOut.contact_id == contact.id,
                                                       TypeOptOut.email_type_id == email_type.id)
            ).first()
            opted_out = frozenset({email_type.id}) if left else frozenset()
        facts = eligibility.ContactFacts(
            address=contact.email, do_not_email=contact.do_not_email, valid=contact.valid,
            opted_out_types=opted_out, last_transaction=contact.last_transaction_at,
            created=contact.created_at or utcnow(),
        )
        verdict = eligibility.check(
            facts, email_type=email_type.id if email_type else None, now=utcnow(),
            inactivity=timedelta(days=days) if days > 0 else None, transactional=transactional)
    refusal = rules.refusal(verdict, suppressed=suppressed)
    if refusal is None:
        return
    if contact is not None and refusal is rules.Refusal.DO_NOT_EMAIL:
        reason = contact.do_not_email_reason
    elif contact is not None and refusal is rules.Refusal.INVALID_ADDRESS:
        reason = contact.invalid_reason
    message = rules.explain(refusal, address=address,
                            type_name=email_type.name if email_type else "", reason=reason,
                            inactivity_days=days)
    raise TxError(message, field=field_name, refusal=refusal)


def _render_check(content: dict[str, Any], merge: dict[str, Any], data: dict[str, Any]) -> str:
    """Render the message once for its recipient before anything is stored (a template that
    fails for them is refused now, not at hand-off); returns the subject as they will read it."""
    from app.services.mailings import base_url

    builder = MessageBuilder({
        "subject": content["subject"], "html": content["html_body"],
        "text": content["text_body"], "from": content["from_address"], "reply_to": "",
        "base_url": base_url(), "bounce_domain": "check", "boundary": "check",
        "domain": "check", "data": data,
    })
    ctx = builder.context(merge)
    try:
        subject = builder.subject_t.render(ctx)
        if builder.html_t:
            builder.html_t.render(ctx)
        if builder.text_t:
            builder.text_t.render(ctx)
    except Exception as exc:  # a template is user code: whatever it raises is its problem
        raise TxError(f"The message cannot be built for this recipient: {exc}",
                      field="data") from exc
    return " ".join(subject.split())


# ---------------------------------------------------------------- after the commit

_PENDING = "sendboard_after_commit"


def after_commit(action: Callable[[], None]) -> None:
    """Run `action` once the current transaction commits (dropped if it rolls back)."""
    db.session().info.setdefault(_PENDING, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_pending(session: Session) -> None:
    for action in session.info.pop(_PENDING, []):
        action()


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)

"""Transactional email: ``POST /tx`` sends one message now, ``GET /tx/<id>`` reads where it is.

The rules are app.services.transactional's (docs/ARCHITECTURE.md, "Transactional email"): a
saved mailing as the template or a subject with bodies, to a contact or an address, with merge
data; do-not-email, the suppression list and the email type's rules are honoured; a repeated
idempotency key returns the first result and sends nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.auth import audit, current_token
from app.api.problems import PROBLEM_TYPES, ApiProblem, not_found
from app.api.registry import endpoint
from app.api.types import Email, Id, Name, Text
from app.domain.transactional import DATA_MAX_KEYS, IDEMPOTENCY_KEY_MAX
from app.inputs import MAX_ID
from app.services import transactional as service

PROBLEM_TYPES.setdefault(
    "recipient-refused",
    "The recipient may not receive this email: do not email, erased (suppression list), left "
    "the email type (only a transactional type reaches them), held back for inactivity, or an "
    "invalid address. `reason` says which.")
PROBLEM_TYPES.setdefault(
    "idempotency-conflict", "The idempotency key was used by another API token.")


class TxTo(BaseModel):
    """The recipient: a contact by id, or an address (the contact with that address if there is
    one, else the bare address)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: Id | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _one(self) -> TxTo:
        if (self.contact_id is None) == (self.email is None):
            raise ValueError("give contact_id or email")
        return self


class TxIn(BaseModel):
    """One transactional email: `mailing_id` (a saved mailing used as the template) or `subject`
    with `html` and/or `text`; `data` holds the message's own merge variables."""

    model_config = ConfigDict(extra="forbid")

    to: TxTo
    mailing_id: Id | None = Field(None, description="A saved mailing whose content is the template")
    subject: Annotated[Text, Field(max_length=500)] | None = None
    html: Annotated[Text, Field(max_length=1_000_000)] | None = None
    text: Annotated[Text, Field(max_length=1_000_000)] | None = None
    from_address: Email | None = Field(None, description="Required without mailing_id")
    from_name: Name | None = None
    reply_to: Email | None = None
    email_type_id: Id | None = Field(
        None, description="Its email type; a type marked transactional ignores type opt-outs "
                          "and the inactivity hold")
    data: dict[str, Any] = Field(default_factory=dict, max_length=DATA_MAX_KEYS,
                                 description="Merge variables, e.g. {\"order\": \"A-17\"}")
    idempotency_key: Annotated[Text, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] | None = \
        Field(None, description="Your key for this email (or the Idempotency-Key header): the "
                                "same key again returns the first result and sends nothing")


class TxOut(BaseModel):
    id: int = Field(description="The message's mailing id (see /mailings/{id})")
    status: str = Field(description="queued, sent (it left Sendboard) or not_sent")
    response: str = Field(description="The recipient's response: planned, sent, delivered, "
                                      "opened, clicked, hard_bounce, ...")
    recipient_id: int
    contact_id: int | None
    to: str
    email_type_id: int | None
    idempotency_key: str | None
    replayed: bool = Field(description="True when the idempotency key was seen before: this is "
                                       "the first request's message")
    created_at: datetime
    handed_off_at: datetime | None


def _out(result: service.TxResult) -> TxOut:
    m, r = result.mailing, result.recipient
    return TxOut(id=m.id, status=result.status, response=r.response, recipient_id=r.id,
                 contact_id=r.contact_id, to=r.address, email_type_id=m.email_type_id,
                 idempotency_key=m.idempotency_key, replayed=result.replayed,
                 created_at=m.created_at, handed_off_at=r.handed_off_at)


def _problem(exc: service.TxError) -> ApiProblem:
    errors = [{"field": exc.field or "body", "detail": str(exc)}]
    if exc.refusal is not None:
        return ApiProblem(422, str(exc), slug="recipient-refused", title="Recipient refused",
                          errors=errors, reason=exc.refusal.value)
    if exc.status == 409:
        return ApiProblem(409, str(exc), slug="idempotency-conflict",
                          title="Idempotency key in use", errors=errors)
    if exc.status == 404:
        return ApiProblem(404, str(exc), errors=errors)
    return ApiProblem(422, str(exc), slug="validation", title="Validation failed", errors=errors)


@endpoint("POST", "/tx", scope="tx:send", body=TxIn, response=TxOut, status=202,
          tag="Transactional", summary="Send one transactional email", errors=(404, 409))
def send_tx(body: TxIn) -> Any:
    """Queue one message ahead of bulk sending. 202 with the new message; 200 with the first
    message when the idempotency key was used before (nothing is sent again). A recipient who
    may not receive it is a 422 problem whose `reason` says why."""
    header = request.headers.get("Idempotency-Key")
    key = body.idempotency_key
    if header is not None:
        if key is not None and key != header:
            raise _problem(service.TxError(
                "The Idempotency-Key header and idempotency_key differ.", field="idempotency_key"))
        key = header
    req = service.TxRequest(
        contact_id=body.to.contact_id, email=body.to.email, mailing_id=body.mailing_id,
        subject=body.subject, html=body.html, text=body.text, from_address=body.from_address,
        from_name=body.from_name, reply_to=body.reply_to, email_type_id=body.email_type_id,
        data=body.data, idempotency_key=key, api_token_id=current_token().id,
    )
    try:
        result = service.send(req)
    except service.TxError as exc:
        raise _problem(exc) from None
    if result.replayed:
        return _out(result), 200
    audit("tx.send", result.mailing, f"to {result.recipient.address}")
    return _out(result), 202


@endpoint("GET", "/tx/<int:tx_id>", scope="tx:send", response=TxOut, tag="Transactional",
          summary="Read a transactional email's state", errors=(404,))
def read_tx(tx_id: int) -> TxOut:
    """Its response now (sent, delivered, opened, ...); only the token that sent it reads it."""
    result = service.get(tx_id, current_token().id) if tx_id < MAX_ID else None
    if result is None:
        raise not_found("transactional email with this id sent by this token")
    return _out(result)

"""Transactions: record one or many purchases (or similar events) by contact id or address.

Recording one moves the contact's last transaction forward, which lifts the inactivity hold at
once: the next mailing's audience includes the contact. An idempotency key makes a retry safe:
the same key again answers with the first transaction and records nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator
from sqlalchemy.exc import IntegrityError

from app.api.auth import audit
from app.api.endpoints.contacts import FieldError, bulk_work
from app.api.problems import ApiProblem, invalid, validate_items
from app.api.registry import endpoint
from app.api.types import Id, Text, Time
from app.extensions import db
from app.services import api_contacts as service

MAX_BULK = 10_000


class TransactionIn(BaseModel):
    """A transaction of one contact, named by `contact_id` or `email`."""

    model_config = ConfigDict(extra="forbid")

    contact_id: Id | None = None
    email: Annotated[Text, Field(max_length=320, description="The contact's address")] | None = None
    occurred_at: Time
    amount: Annotated[Decimal, Field(allow_inf_nan=False, max_digits=14, decimal_places=2)] | None = Field(
        None, description="e.g. 49.90 (a number or a string)")
    reference: Annotated[Text, Field(max_length=200)] = ""
    idempotency_key: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        None, description="Your key for this transaction: sending it again records nothing")

    @model_validator(mode="after")
    def _one_contact(self) -> TransactionIn:
        if (self.contact_id is None) == (self.email is None):
            raise ValueError("give contact_id or email")
        return self


class TransactionOut(BaseModel):
    id: int
    contact_id: int
    occurred_at: datetime
    amount: str
    reference: str
    idempotency_key: str | None


class RecordedOut(BaseModel):
    status: Literal["recorded", "duplicate"]
    transaction: TransactionOut


TransactionItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/TransactionIn"})]


class TransactionsBulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: list[TransactionItem] = Field(min_length=1, max_length=MAX_BULK)


class TransactionResult(BaseModel):
    index: int
    status: Literal["recorded", "duplicate", "refused"]
    transaction: TransactionOut | None
    errors: list[FieldError]


class TransactionsBulkOut(BaseModel):
    recorded: int
    duplicates: int
    refused: int
    results: list[TransactionResult]


_ITEM = TypeAdapter(TransactionIn)
_ITEMS = TypeAdapter(list[TransactionIn])


def _input(item: TransactionIn) -> service.TransactionInput:
    return service.TransactionInput(
        occurred_at=item.occurred_at, contact_id=item.contact_id, email=item.email,
        amount="" if item.amount is None else f"{item.amount:.2f}", reference=item.reference,
        idempotency_key=item.idempotency_key)


def _record(items: list[service.TransactionInput]) -> list[service.TransactionOutcome]:
    """Record; a concurrent call that took one of the keys first makes this one see it."""
    try:
        outcomes = service.record_transactions(items)
        db.session.flush()
        return outcomes
    except IntegrityError:
        db.session.rollback()  # nothing else was written by this call yet
        return service.record_transactions(items)


@endpoint("POST", "/transactions", scope="transactions:write", body=TransactionIn, response=RecordedOut,
          status=201, also=(200,), tag="Transactions", errors=(409,),
          summary="Record a transaction (answers 200 with the first one for a repeated idempotency key)")
def record_transaction(body: TransactionIn) -> Any:
    outcome = _record([_input(body)])[0]
    if outcome.status == "refused":
        error = outcome.errors[0]
        raise invalid(error["field"], error["detail"])
    if outcome.transaction is None:  # pragma: no cover - a duplicate always carries the first
        raise ApiProblem(409, "The idempotency key is in use.", slug="conflict")
    if outcome.status == "recorded":
        audit("contact.transaction", outcome.transaction["contact_id"],
              f"transaction {outcome.transaction['id']} recorded through the API", kind="contact")
    return RecordedOut(status=outcome.status, transaction=TransactionOut(**outcome.transaction)), (  # type: ignore[arg-type]
        201 if outcome.status == "recorded" else 200)


@endpoint("POST", "/transactions/bulk", scope="transactions:write", body=TransactionsBulkIn,
          response=TransactionsBulkOut, tag="Transactions",
          summary="Record up to 10,000 transactions, with a result per item",
          description="Each item is a TransactionIn; an item that fails is refused alone.")
def record_transactions(body: TransactionsBulkIn) -> Any:
    with bulk_work():
        return _record_bulk(body)


def _record_bulk(body: TransactionsBulkIn) -> Any:
    def refused(i: int, raw: Any, errors: list[dict[str, Any]]) -> dict[str, Any]:
        return {"index": i, "status": "refused", "transaction": None, "errors": errors}

    items, positions, results = validate_items(_ITEM, _ITEMS, body.transactions, refused)
    inputs = [_input(item) for item in items]
    for outcome in _record(inputs) if inputs else []:
        i = positions[outcome.index]
        results[i] = {"index": i, "status": outcome.status, "transaction": outcome.transaction,
                      "errors": outcome.errors}
    done = [r for r in results if r is not None]
    counts = {"recorded": sum(r["status"] == "recorded" for r in done),
              "duplicates": sum(r["status"] == "duplicate" for r in done),
              "refused": sum(r["status"] == "refused" for r in done)}
    if counts["recorded"]:
        audit("contact.transaction", None, f"{counts['recorded']} transactions recorded through the API",
              kind="contact")
    # Plain dicts, shaped as TransactionsBulkOut (cheaper than 10,000 models).
    return {**counts, "results": done}

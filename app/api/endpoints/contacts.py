"""Contacts: upsert by address (one, or up to 10,000 with a result per item), read, change
flags, leave or rejoin an email type, delete, erase."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator
from sqlalchemy import select

from app.api.auth import audit
from app.api.pagination import Page, PageQuery, paginate
from app.api.problems import ApiProblem, invalid, not_found, validate_items
from app.api.registry import endpoint
from app.api.types import Email, FieldKey, FieldValue, Id, Name, Text, Time, Zone
from app.extensions import db
from app.models import Contact
from app.services import api_contacts as service
from app.services import contacts as contacts_service
from app.services import settings

MAX_BULK = 10_000


class Ref(BaseModel):
    id: int
    name: str


class ContactOut(BaseModel):
    id: int
    email: str
    name: str
    fields: dict[str, Any]
    time_zone: str = Field(description="IANA zone; empty: the organisation's")
    do_not_email: bool
    do_not_email_reason: str
    valid: bool
    invalid_reason: str
    inactive: bool = Field(description="No transaction within the inactivity period: held back")
    last_transaction_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lists: list[Ref]
    unsubscribed_email_types: list[Ref]


class ContactIn(BaseModel):
    """A contact to create or update, identified by its address. Absent values are left as
    they are; in `fields`, null removes a field. Flags are changed with PATCH."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name | None = None
    fields: dict[FieldKey, FieldValue] | None = Field(None, max_length=100)
    time_zone: Zone | None = None
    lists: list[Name] | None = Field(None, max_length=50,
                                     description="Names of lists to add the contact to (created if missing)")


class UpsertOut(BaseModel):
    status: Literal["created", "updated"]
    contact: ContactOut


ContactItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/ContactIn"})]


class ContactsBulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[ContactItem] = Field(min_length=1, max_length=MAX_BULK)


class FieldError(BaseModel):
    field: str
    detail: str


class ContactResult(BaseModel):
    index: int
    email: str
    status: Literal["created", "updated", "refused"]
    id: int | None
    errors: list[FieldError]


class ContactsBulkOut(BaseModel):
    created: int
    updated: int
    refused: int
    results: list[ContactResult]


class ContactPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    do_not_email: bool | None = None
    do_not_email_reason: Text | None = Field(None, max_length=100)
    name: Name | None = None
    fields: dict[FieldKey, FieldValue] | None = Field(None, max_length=100)
    time_zone: Zone | None = None


class EmailTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email_type_id: Id | None = None
    email_type: Name | None = Field(None, description="The email type's name, instead of its id")

    @model_validator(mode="after")
    def _one(self) -> EmailTypeIn:
        if (self.email_type_id is None) == (self.email_type is None):
            raise ValueError("give email_type_id or email_type (its name)")
        return self


class EmailTypeOut(BaseModel):
    contact_id: int
    email_type: Ref
    subscribed: bool
    changed: bool


class ErasedOut(BaseModel):
    erased: bool
    email_sha256: str


class LookupQuery(BaseModel):
    email: Annotated[str, Field(max_length=320)]


class ContactsQuery(PageQuery):
    list_id: Id | None = Field(None, description="Only members of this list (not a segment)")
    updated_since: Time | None = None


@contextmanager
def bulk_work() -> Iterator[None]:
    """No cyclic garbage collection while a bulk call builds its tens of thousands of short-lived
    objects (each pass would walk the whole heap, a third of the call's time); reference counting
    still frees them, and the collector runs again afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_ITEM = TypeAdapter(ContactIn)
_ITEMS = TypeAdapter(list[ContactIn])


def _inactivity_cutoff() -> datetime | None:
    return contacts_service.inactive_before(int(settings.get("inactivity_days")))


def contact_out(contact: Contact, rel: service.Related, cutoff: datetime | None) -> ContactOut:
    last = contact.last_transaction_at or contact.created_at
    return ContactOut(
        id=contact.id, email=contact.email, name=contact.name, fields=contact.fields or {},
        time_zone=contact.time_zone or "", do_not_email=contact.do_not_email,
        do_not_email_reason=contact.do_not_email_reason, valid=contact.valid,
        invalid_reason=contact.invalid_reason,
        inactive=cutoff is not None and last < cutoff,
        last_transaction_at=contact.last_transaction_at, created_at=contact.created_at,
        updated_at=contact.updated_at,
        lists=[Ref(id=i, name=n) for i, n in rel.lists.get(contact.id, [])],
        unsubscribed_email_types=[Ref(id=i, name=n) for i, n in rel.opted_out.get(contact.id, [])])


def _one_out(contact: Contact) -> ContactOut:
    db.session.flush()
    db.session.refresh(contact)
    return contact_out(contact, service.related([contact.id]), _inactivity_cutoff())


def _get(contact_id: int) -> Contact:
    contact = service.find(contact_id=contact_id)
    if contact is None:
        raise not_found("contact with this id")
    return contact


def _change(item: ContactIn) -> service.ContactChange:
    return service.ContactChange(email=item.email, name=item.name, fields=item.fields,
                                 time_zone=item.time_zone, lists=item.lists)


@endpoint("GET", "/contacts", scope="contacts:read", query=ContactsQuery, response=Page[ContactOut],
          tag="Contacts", summary="List contacts, oldest first")
def list_contacts(query: ContactsQuery) -> Any:
    from app.models import ListMember

    stmt = select(Contact)
    scope = "contacts"
    if query.list_id is not None:
        stmt = stmt.join(ListMember, ListMember.contact_id == Contact.id).where(
            ListMember.list_id == query.list_id)
        scope += f":list:{query.list_id}"
    if query.updated_since is not None:
        stmt = stmt.where(Contact.updated_at >= query.updated_since)
        scope += f":since:{query.updated_since.isoformat()}"
    cutoff = _inactivity_cutoff()
    rel = service.Related()

    def load(rows: Any) -> None:
        found = service.related([c.id for c in rows])
        rel.lists, rel.opted_out = found.lists, found.opted_out

    return paginate(stmt, Contact.id, query, lambda c: contact_out(c, rel, cutoff), scope=scope,
                    prepare=load)


@endpoint("GET", "/contacts/<int:contact_id>", scope="contacts:read", response=ContactOut,
          tag="Contacts", summary="Read a contact: flags, lists, custom fields, time zone", errors=(404,))
def get_contact(contact_id: int) -> Any:
    return _one_out(_get(contact_id))


@endpoint("GET", "/contacts/lookup", scope="contacts:read", query=LookupQuery, response=ContactOut,
          tag="Contacts", summary="Find a contact by address", errors=(404,))
def lookup_contact(query: LookupQuery) -> Any:
    contact = service.find(email=query.email)
    if contact is None:
        raise not_found("contact with this address")
    return _one_out(contact)


@endpoint("POST", "/contacts", scope="contacts:write", body=ContactIn, response=UpsertOut, status=201,
          also=(200,),
          tag="Contacts", summary="Create or update a contact by address",
          description="Answers 201 when the contact was created, 200 when it was updated. An "
                      "erased address is refused (409).", errors=(409,))
def upsert_contact(body: ContactIn) -> Any:
    outcome = service.upsert_contacts([_change(body)])[0]
    if outcome.status == "refused":
        error = outcome.errors[0]
        if "erased" in error["detail"]:
            raise ApiProblem(409, error["detail"], slug="suppressed", title="Erased address",
                             errors=outcome.errors)
        raise invalid(error["field"], error["detail"])
    contact = _get(outcome.contact_id or 0)
    action = "contact.api_create" if outcome.status == "created" else "contact.api_update"
    audit(action, contact, f"{outcome.status} {contact.email}")
    return UpsertOut(status=outcome.status, contact=_one_out(contact)), (  # type: ignore[arg-type]
        201 if outcome.status == "created" else 200)


@endpoint("POST", "/contacts/bulk", scope="contacts:write", body=ContactsBulkIn, response=ContactsBulkOut,
          tag="Contacts", summary="Create or update up to 10,000 contacts, with a result per item",
          description="Each item is a ContactIn. Items that fail validation, repeat an earlier "
                      "item's address or name an erased address are refused alone; the others "
                      "are written.")
def bulk_upsert(body: ContactsBulkIn) -> Any:
    with bulk_work():
        return _bulk_upsert(body)


def _bulk_upsert(body: ContactsBulkIn) -> Any:
    def refused(i: int, raw: Any, errors: list[dict[str, Any]]) -> dict[str, Any]:
        email = raw.get("email") if isinstance(raw, dict) else None
        return {"index": i, "email": email if isinstance(email, str) else "",
                "status": "refused", "id": None, "errors": errors}

    changes, positions, results = validate_items(_ITEM, _ITEMS, body.contacts, refused)
    for outcome in service.upsert_contacts(changes):
        i = positions[outcome.index]
        results[i] = {"index": i, "email": outcome.email, "status": outcome.status,
                      "id": outcome.contact_id, "errors": outcome.errors}
    done = [r for r in results if r is not None]
    counts = {s: sum(1 for r in done if r["status"] == s) for s in ("created", "updated", "refused")}
    audit("contact.api_bulk", None, f"{counts['created']} created, {counts['updated']} updated, "
                                    f"{counts['refused']} refused", kind="contact")
    # Plain dicts, shaped as ContactsBulkOut: building 10,000 models would cost more than the writes.
    return {**counts, "results": done}


@endpoint("PATCH", "/contacts/<int:contact_id>", scope="contacts:write", body=ContactPatch,
          response=ContactOut, tag="Contacts", errors=(404,),
          summary="Change a contact's flags (do-not-email), name, fields or time zone")
def patch_contact(contact_id: int, body: ContactPatch) -> Any:
    contact = _get(contact_id)
    changed = []
    if body.do_not_email is not None:
        service.set_do_not_email(contact, body.do_not_email, body.do_not_email_reason or "")
        changed.append(f"do_not_email={'on' if body.do_not_email else 'off'}")
    if body.name is not None:
        contact.name = body.name
        changed.append("name")
    if body.fields is not None:
        merged = dict(contact.fields or {})
        for key, value in body.fields.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        contact.fields = merged
        changed.append("fields")
    if body.time_zone is not None:
        contact.time_zone = body.time_zone
        changed.append("time_zone")
    audit("contact.api_update", contact, ", ".join(changed) or "nothing")
    return _one_out(contact)


def _email_type(body: EmailTypeIn) -> Any:
    kind = service.email_type(body.email_type_id, body.email_type)
    if kind is None:
        field = "email_type_id" if body.email_type_id is not None else "email_type"
        raise invalid(field, "no email type has this " + ("id" if field == "email_type_id" else "name"))
    return kind


@endpoint("POST", "/contacts/<int:contact_id>/unsubscribe", scope="contacts:write", body=EmailTypeIn,
          response=EmailTypeOut, tag="Contacts", errors=(404,),
          summary="The contact leaves one email type (other types are unchanged)")
def unsubscribe(contact_id: int, body: EmailTypeIn) -> Any:
    contact = _get(contact_id)
    kind = _email_type(body)
    changed = service.unsubscribe(contact, kind)
    audit("contact.email_type", contact, f"left {kind.name} through the API")
    return EmailTypeOut(contact_id=contact.id, email_type=Ref(id=kind.id, name=kind.name),
                        subscribed=False, changed=changed)


@endpoint("POST", "/contacts/<int:contact_id>/resubscribe", scope="contacts:write", body=EmailTypeIn,
          response=EmailTypeOut, tag="Contacts", errors=(404,),
          summary="The contact receives an email type again")
def resubscribe(contact_id: int, body: EmailTypeIn) -> Any:
    contact = _get(contact_id)
    kind = _email_type(body)
    changed = service.resubscribe(contact, kind)
    audit("contact.email_type", contact, f"rejoined {kind.name} through the API")
    return EmailTypeOut(contact_id=contact.id, email_type=Ref(id=kind.id, name=kind.name),
                        subscribed=True, changed=changed)


@endpoint("DELETE", "/contacts/<int:contact_id>", scope="contacts:write", response=None, status=204,
          tag="Contacts", errors=(404,),
          summary="Delete a contact (it may be added again; use erase to forbid that)")
def delete_contact(contact_id: int) -> Any:
    contact = _get(contact_id)
    audit("contact.api_delete", contact, "deleted")
    service.delete_contact(contact)
    return Response(status=204)


@endpoint("POST", "/contacts/<int:contact_id>/erase", scope="contacts:write", response=ErasedOut,
          tag="Contacts", errors=(404,),
          summary="Erase a contact (GDPR): its data goes, its address can never be added again",
          description="The contact, its transactions, memberships and opt-outs are deleted; past "
                      "recipients keep only their response. The SHA-256 of the normalised address "
                      "is kept so that no CSV import, API upsert or one-off brings it back.")
def erase_contact(contact_id: int) -> Any:
    contact = _get(contact_id)
    audit("contact.erase", contact, "erased (address kept only as a hash)")
    digest = service.erase(contact)
    return ErasedOut(erased=True, email_sha256=digest)

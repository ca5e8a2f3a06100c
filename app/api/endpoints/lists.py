"""Lists and segments: read them and their members; add or remove members of a list (a
segment's members follow its rule and are read only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import false, func, select

from app.api.auth import audit
from app.api.endpoints.contacts import ContactOut, contact_out
from app.api.pagination import Page, PageQuery, paginate
from app.api.problems import ApiProblem, not_found
from app.api.registry import endpoint
from app.api.types import Email, Id
from app.domain.segments import SegmentError
from app.extensions import db
from app.models import Contact, ContactList, ListMember
from app.services import api_contacts as service
from app.services import segments as segments_service

MAX_MEMBERS = 10_000


class ListOut(BaseModel):
    id: int
    name: str
    description: str
    kind: Literal["list", "segment"]
    members: int = Field(description="Members now (for a segment: contacts its rule picks now)")
    rule: dict[str, Any] | None = Field(description="A segment's rule; null for a list")
    created_at: datetime


class ListsQuery(PageQuery):
    kind: Literal["list", "segment"] | None = None


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: list[Id] = Field(default_factory=list, max_length=MAX_MEMBERS)
    emails: list[Email] = Field(default_factory=list, max_length=MAX_MEMBERS)

    @model_validator(mode="after")
    def _some(self) -> MembersIn:
        if not self.contact_ids and not self.emails:
            raise ValueError("give contact_ids or emails")
        if len(self.contact_ids) + len(self.emails) > MAX_MEMBERS:
            raise ValueError(f"at most {MAX_MEMBERS:,} contacts a call")
        return self


class MembersOut(BaseModel):
    list_id: int
    changed: int = Field(description="Contacts added (or removed) by this call")
    members: int
    not_found: list[str] = Field(description="Ids and addresses that name no contact")


def _list_out(item: ContactList, members: int) -> ListOut:
    return ListOut(id=item.id, name=item.name, description=item.description or "",
                   kind="segment" if item.rule is not None else "list", members=members,
                   rule=item.rule, created_at=item.created_at)


def _count(item: ContactList) -> int:
    if item.rule is not None:
        return segments_service.counts([item]).get(item.id, 0)
    return int(db.session.execute(select(func.count()).select_from(ListMember)
                                  .where(ListMember.list_id == item.id)).scalar_one())


def _get(list_id: int) -> ContactList:
    item = db.session.get(ContactList, list_id)
    if item is None:
        raise not_found("list or segment with this id")
    return item


@endpoint("GET", "/lists", scope="contacts:read", query=ListsQuery, response=Page[ListOut],
          tag="Lists", summary="Lists and segments, oldest first")
def list_lists(query: ListsQuery) -> Any:
    stmt = select(ContactList)
    if query.kind == "list":
        stmt = stmt.where(ContactList.rule.is_(None))
    elif query.kind == "segment":
        stmt = stmt.where(ContactList.rule.is_not(None))
    counts: dict[int, int] = {}

    def load(rows: Any) -> None:
        plain = [r.id for r in rows if r.rule is None]
        if plain:
            counts.update(db.session.execute(
                select(ListMember.list_id, func.count()).where(ListMember.list_id.in_(plain))
                .group_by(ListMember.list_id)).all())
        counts.update(segments_service.counts([r for r in rows if r.rule is not None]))

    return paginate(stmt, ContactList.id, query, lambda r: _list_out(r, counts.get(r.id, 0)),
                    scope=f"lists:{query.kind or ''}", prepare=load)


@endpoint("GET", "/lists/<int:list_id>", scope="contacts:read", response=ListOut, tag="Lists",
          summary="A list or segment", errors=(404,))
def get_list(list_id: int) -> Any:
    item = _get(list_id)
    return _list_out(item, _count(item))


@endpoint("GET", "/lists/<int:list_id>/members", scope="contacts:read", query=PageQuery,
          response=Page[ContactOut], tag="Lists", errors=(404,),
          summary="The members of a list, or the contacts a segment's rule picks now")
def list_members(list_id: int, query: PageQuery) -> Any:
    from app.api.endpoints.contacts import _inactivity_cutoff

    item = _get(list_id)
    if item.rule is not None:
        try:
            picked = segments_service.condition_sql(segments_service.rule_of(item))
        except SegmentError:  # a stored rule that no longer parses picks nobody
            picked = false()
        stmt = select(Contact).where(picked)
    else:
        stmt = select(Contact).join(ListMember, ListMember.contact_id == Contact.id).where(
            ListMember.list_id == item.id)
    cutoff = _inactivity_cutoff()
    rel = service.Related()

    def load(rows: Any) -> None:
        found = service.related([c.id for c in rows])
        rel.lists, rel.opted_out = found.lists, found.opted_out

    return paginate(stmt, Contact.id, query, lambda c: contact_out(c, rel, cutoff),
                    scope=f"members:{item.id}", prepare=load)


def _plain(list_id: int) -> ContactList:
    item = _get(list_id)
    if item.rule is not None:
        raise ApiProblem(409, f"{item.name!r} is a segment: its contacts follow its rule.",
                         slug="conflict", title="A segment")
    return item


@endpoint("POST", "/lists/<int:list_id>/members", scope="contacts:write", body=MembersIn,
          response=MembersOut, tag="Lists", errors=(404, 409),
          summary="Add contacts (by id or address) to a list")
def add_members(list_id: int, body: MembersIn) -> Any:
    item = _plain(list_id)
    ids, missing = service.contact_ids_for(body.contact_ids, body.emails)
    added = service.add_members(item, ids)
    audit("list.members_add", item, f"{added} added through the API")
    return MembersOut(list_id=item.id, changed=added, members=_count(item), not_found=missing)


@endpoint("DELETE", "/lists/<int:list_id>/members", scope="contacts:write", body=MembersIn,
          response=MembersOut, tag="Lists", errors=(404, 409),
          summary="Remove contacts (by id or address) from a list")
def remove_members(list_id: int, body: MembersIn) -> Any:
    item = _plain(list_id)
    ids, missing = service.contact_ids_for(body.contact_ids, body.emails)
    removed = service.remove_members(item, ids)
    audit("list.members_remove", item, f"{removed} removed through the API")
    return MembersOut(list_id=item.id, changed=removed, members=_count(item), not_found=missing)

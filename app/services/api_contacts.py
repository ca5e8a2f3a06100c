"""Contacts, transactions and list members as the API changes them: set-based, in bulk.

Up to 10,000 items a call are written with a handful of statements (lookups by lists of keys,
one INSERT ... ON CONFLICT for new and known contacts alike, one membership INSERT), each item
getting its own outcome. On PostgreSQL the rows go as one array a column (INSERT ... SELECT FROM
unnest); on SQLite as multi-row VALUES batches.
No commit here: the API wrapper commits once the call succeeded (docs/ARCHITECTURE.md, "API").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.domain.eligibility import address_key, normalize_address
from app.domain.events import CLICK
from app.domain.transactions import latest_transaction_time
from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    EmailType,
    ListMember,
    Recipient,
    ResponseEvent,
    Suppression,
    Transaction,
    TypeOptOut,
    UTCDateTime,
    utcnow,
)
from app.services import suppressions

CHUNK = 500
ERASED_ADDRESS = "erased"


def _insert(model: Any) -> Any:
    table = model.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _dialect() -> str:
    return str(db.session.get_bind().dialect.name)


def _lookup(build: Any) -> dict[str, Any]:
    """A statement filtering `column IN :values`, built (and compiled) once whatever the values:
    `IN (SELECT unnest(array))` on PostgreSQL (one parameter, however long the list; planned as a
    semi-join, never a scan comparing each row with each value), an expanding IN list on SQLite.
    `build(in_)` makes the statement; returns {dialect name: statement}."""
    return {
        "postgresql": build(lambda c: c.in_(select(func.unnest(bindparam(
            "values", type_=postgresql.ARRAY(c.type)))))),
        "sqlite": build(lambda c: c.in_(bindparam("values", expanding=True))),
    }


# --------------------------------------------------------------------------------------------
# Upsert
# --------------------------------------------------------------------------------------------


@dataclass
class ContactChange:
    """One contact to create or update, identified by its address. None leaves a value as it is;
    in `fields`, a None value removes that field."""

    email: str
    name: str | None = None
    fields: dict[str, Any] | None = None
    time_zone: str | None = None
    lists: list[str] | None = None


class ChangeLike(Protocol):
    """What upsert_contacts reads of a change: a ContactChange, or the API's validated item."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def fields(self) -> dict[str, Any] | None: ...
    @property
    def time_zone(self) -> str | None: ...
    @property
    def lists(self) -> list[str] | None: ...


@dataclass
class Outcome:
    index: int
    email: str
    status: str  # created | updated | refused
    contact_id: int | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


def _refused(index: int, email: str, field_name: str, detail: str) -> Outcome:
    return Outcome(index, email, "refused", errors=[{"field": field_name, "detail": detail}])


def _list_ids(names: set[str]) -> tuple[dict[str, int], set[str]]:
    """Ids of the named lists (created when missing), and the names that are segments."""
    ids: dict[str, int] = {}
    segments: set[str] = set()
    if not names:
        return ids, segments
    for part in _chunks(sorted(names)):
        for id_, name, rule in db.session.execute(
                select(ContactList.id, ContactList.name, ContactList.rule)
                .where(ContactList.name.in_(part))):
            if rule is not None:
                segments.add(name)
            else:
                ids[name] = id_
    missing = sorted(names - set(ids) - segments)
    if missing:
        now = utcnow()
        db.session.execute(_insert(ContactList).on_conflict_do_nothing(index_elements=["name"]),
                           [{"name": n, "description": "", "created_at": now} for n in missing])
        for id_, name in db.session.execute(
                select(ContactList.id, ContactList.name).where(ContactList.name.in_(missing))):
            ids[name] = id_
    return ids, segments


_CONTACT = Contact.__table__
_EXISTING = _lookup(lambda in_: select(_CONTACT.c.id, _CONTACT.c.email_key, _CONTACT.c.name,
                                        _CONTACT.c.fields, _CONTACT.c.time_zone)
                    .where(in_(_CONTACT.c.email_key)))
_SUPPRESSED = _lookup(lambda in_: select(Suppression.email_hash, Suppression.reason)
                      .where(in_(Suppression.email_hash)))
# PostgreSQL: the rows go as one array a column (a handful of parameters, not thousands).
_PG_UPSERT = text("""
INSERT INTO contacts (email, email_key, name, fields, time_zone, created_at, updated_at,
                      do_not_email, do_not_email_reason, valid, invalid_reason, soft_bounce_mailings,
                      last_transaction_at)
SELECT u.email, u.email_key, u.name, CAST(u.fields AS JSON), u.time_zone, :now, :now,
       false, '', true, '', 0, NULL
FROM unnest(:emails, :keys, :names, :fields, :zones) AS u(email, email_key, name, fields, time_zone)
ON CONFLICT (email_key) DO UPDATE SET email = excluded.email, name = excluded.name,
    fields = excluded.fields, time_zone = excluded.time_zone, updated_at = excluded.updated_at
RETURNING id, email_key
""").bindparams(bindparam("now", type_=UTCDateTime()),
                *(bindparam(n, type_=postgresql.ARRAY(String())) for n in ("emails", "keys", "names",
                                                                         "fields", "zones")))
_PG_MEMBERS = text("""
INSERT INTO list_members (list_id, contact_id, added_at)
SELECT u.list_id, u.contact_id, :now FROM unnest(:lists, :contacts) AS u(list_id, contact_id)
ON CONFLICT DO NOTHING
""").bindparams(bindparam("now", type_=UTCDateTime()), bindparam("lists", type_=postgresql.ARRAY(Integer())),
                bindparam("contacts", type_=postgresql.ARRAY(BigInteger())))
# What every contact the API creates starts with, written into the statement rather than sent
# with each row.
_NEW_CONTACT = {"do_not_email": false(), "do_not_email_reason": literal_column("''"), "valid": true(),
                "invalid_reason": literal_column("''"), "soft_bounce_mailings": literal_column("0"),
                "last_transaction_at": null()}


def _suppressed(keys: Iterable[str]) -> dict[str, str]:
    """{address key: reason} for those of the keys on the suppression list."""
    by_hash = {suppressions.address_hash(k): k for k in keys}
    found: dict[str, str] = {}
    stmt = _SUPPRESSED[_dialect()]
    for part in _chunks(list(by_hash)):
        for digest, reason in db.session.execute(stmt, {"values": part}):
            found[by_hash[digest]] = reason
    return found


def upsert_contacts(changes: Sequence[ChangeLike]) -> list[Outcome]:
    """Create or update each contact by address; one outcome per change, in order.

    Refused: an address an earlier item of the call has, an erased address, a segment among
    `lists`. Flags (do-not-email, validity) are never changed here, as in a CSV import, but a
    new contact at an address that hard-bounced or complained before starts do not email."""
    outcomes: list[Outcome | None] = [None] * len(changes)
    first: dict[str, int] = {}
    emails: list[str] = [""] * len(changes)
    for i, change in enumerate(changes):
        email = normalize_address(change.email)
        key = address_key(email)
        emails[i] = email
        if key in first:
            outcomes[i] = _refused(i, email, "email", f"the same address as item {first[key]}")
            continue
        first[key] = i

    # One look at the suppression list: erased addresses are refused, hard bounces and
    # complaints carried to the contacts created below.
    listed = _suppressed(first)
    for key, reason in listed.items():
        if reason == suppressions.ERASED:
            i = first.pop(key)
            outcomes[i] = _refused(i, emails[i], "email", "this address was erased and cannot be added again")

    list_names = {n for i in first.values() for n in (changes[i].lists or ())}
    list_ids, segments = _list_ids(list_names)
    if segments:
        for key, i in list(first.items()):
            bad = sorted(set(changes[i].lists or []) & segments)
            if bad:
                first.pop(key)
                outcomes[i] = _refused(i, emails[i], "lists",
                                       f"{bad[0]!r} is a segment: its contacts follow its rule")

    existing: dict[str, Any] = {}
    stmt = _EXISTING[_dialect()]
    for part in _chunks(list(first)):
        for row in db.session.execute(stmt, {"values": part}):
            existing[row.email_key] = row

    # One INSERT ... ON CONFLICT for new and known contacts alike (a known contact's values are
    # merged here), sent in multi-row batches; the ids come back with it.
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for key, i in first.items():
        change = changes[i]
        incoming = change.fields or {}
        current = existing.get(key)
        if current is None:
            rows.append({"email": emails[i], "email_key": key, "name": change.name or "",
                         "fields": {k: v for k, v in incoming.items() if v is not None},
                         "time_zone": change.time_zone or "", "created_at": now, "updated_at": now})
            continue
        merged = dict(current.fields or {})
        for k, v in incoming.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        rows.append({"email": emails[i], "email_key": key,
                     "name": current.name if change.name is None else change.name, "fields": merged,
                     "time_zone": current.time_zone if change.time_zone is None else change.time_zone,
                     "created_at": now, "updated_at": now})
        outcomes[i] = Outcome(i, emails[i], "updated", current.id)
    ids: dict[str, int] = {}
    if rows and _dialect() == "postgresql":
        for part in _chunks(rows, 5_000):
            for id_, key in db.session.execute(_PG_UPSERT, {
                    "now": now, "emails": [r["email"] for r in part], "keys": [r["email_key"] for r in part],
                    "names": [r["name"] for r in part], "fields": [json.dumps(r["fields"]) for r in part],
                    "zones": [r["time_zone"] for r in part]}):
                ids[key] = id_
    elif rows:
        stmt = _insert(Contact).values(_NEW_CONTACT)
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(index_elements=["email_key"], set_={
            "email": new.email, "name": new.name, "fields": new.fields, "time_zone": new.time_zone,
            "updated_at": new.updated_at,
        }).returning(_CONTACT.c.id, _CONTACT.c.email_key)
        for id_, key in db.session.execute(stmt, rows).all():
            ids[key] = id_
    created: dict[str, int] = {}
    for key, i in first.items():
        if key not in existing:
            created[key] = ids[key]
            outcomes[i] = Outcome(i, emails[i], "created", ids[key])
    # An address that hard-bounced or complained before it was a contact is created do not
    # email (app.services.suppressions); an erased one was refused above.
    carried = {k: v for k, v in created.items() if k in listed}
    if carried:
        suppressions.carry_to_new_contacts(carried)

    pairs = sorted({(list_ids[name], ids[key]) for key, i in first.items()
                    for name in (changes[i].lists or ())})
    if pairs and _dialect() == "postgresql":
        db.session.execute(_PG_MEMBERS, {"now": now, "lists": [lid for lid, _ in pairs],
                                         "contacts": [cid for _, cid in pairs]})
    elif pairs:
        stmt = _insert(ListMember).on_conflict_do_nothing()
        db.session.execute(stmt, [{"list_id": lid, "contact_id": cid, "added_at": now}
                                  for lid, cid in pairs])
    return [o for o in outcomes if o is not None]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def find(contact_id: int | None = None, email: str | None = None) -> Contact | None:
    if contact_id is not None:
        return db.session.get(Contact, contact_id)
    if email is not None:
        key = address_key(normalize_address(email))
        return db.session.execute(select(Contact).where(Contact.email_key == key)).scalar_one_or_none()
    return None


@dataclass
class Related:
    """Lists and left email types of a page of contacts, loaded in two queries."""

    lists: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    opted_out: dict[int, list[tuple[int, str]]] = field(default_factory=dict)


def related(contact_ids: Sequence[int]) -> Related:
    out = Related()
    if not contact_ids:
        return out
    for cid, lid, name in db.session.execute(
            select(ListMember.contact_id, ContactList.id, ContactList.name)
            .join(ContactList, ContactList.id == ListMember.list_id)
            .where(ListMember.contact_id.in_(contact_ids)).order_by(ContactList.name)):
        out.lists.setdefault(cid, []).append((lid, name))
    for cid, tid, name in db.session.execute(
            select(TypeOptOut.contact_id, EmailType.id, EmailType.name)
            .join(EmailType, EmailType.id == TypeOptOut.email_type_id)
            .where(TypeOptOut.contact_id.in_(contact_ids)).order_by(EmailType.name)):
        out.opted_out.setdefault(cid, []).append((tid, name))
    return out


# --------------------------------------------------------------------------------------------
# Flags, email types, delete, erase
# --------------------------------------------------------------------------------------------


def set_do_not_email(contact: Contact, value: bool, reason: str = "") -> None:
    contact.do_not_email = value
    contact.do_not_email_reason = ((reason.strip() or "set through the API")[:100] if value else "")


def email_type(type_id: int | None = None, name: str | None = None) -> EmailType | None:
    if type_id is not None:
        return db.session.get(EmailType, type_id)
    if name is not None:
        return db.session.execute(
            select(EmailType).where(EmailType.name == name.strip())).scalar_one_or_none()
    return None


def unsubscribe(contact: Contact, kind: EmailType) -> bool:
    """The contact leaves one email type; False when it had already."""
    before = db.session.get(TypeOptOut, (contact.id, kind.id)) is not None
    stmt = _insert(TypeOptOut).values(contact_id=contact.id, email_type_id=kind.id,
                                      created_at=utcnow()).on_conflict_do_nothing()
    db.session.execute(stmt)
    return not before


def resubscribe(contact: Contact, kind: EmailType) -> bool:
    result = db.session.execute(delete(TypeOptOut).where(TypeOptOut.contact_id == contact.id,
                                                         TypeOptOut.email_type_id == kind.id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def delete_contact(contact: Contact) -> None:
    """Remove the contact with its transactions, memberships and opt-outs; recipients of past
    mailings stay (with their address) for the mailings' figures. It may be imported again."""
    contact_id = contact.id
    db.session.expunge(contact)
    db.session.execute(delete(Contact).where(Contact.id == contact_id))


def erase(contact: Contact) -> str:
    """GDPR erasure: the contact and everything about it goes, past recipients keep only their
    response (address and merge data blanked); the address's SHA-256 stays so that no import,
    API call or one-off brings it back. Returns the hash."""
    digest = suppressions.suppress(contact.email)
    db.session.execute(update(Recipient).where(Recipient.contact_id == contact.id)
                       .values(address=ERASED_ADDRESS, merge_data=None)
                       .execution_options(synchronize_session=False))
    delete_contact(contact)
    return digest


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------


@dataclass
class TransactionInput:
    occurred_at: datetime
    contact_id: int | None = None
    email: str | None = None
    amount: str = ""
    reference: str = ""
    idempotency_key: str | None = None


@dataclass
class TransactionOutcome:
    index: int
    status: str  # recorded | duplicate | refused
    transaction: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


def _transaction_view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "contact_id": row.contact_id, "occurred_at": row.occurred_at,
            "amount": row.amount, "reference": row.reference,
            "idempotency_key": row.idempotency_key}


_TRANSACTION = Transaction.__table__
_BY_KEY = _lookup(lambda in_: select(_TRANSACTION).where(in_(_TRANSACTION.c.idempotency_key)))
_ID_BY_KEY = _lookup(lambda in_: select(_CONTACT.c.id, _CONTACT.c.email_key).where(in_(_CONTACT.c.email_key)))
_REAL_IDS = _lookup(lambda in_: select(_CONTACT.c.id).where(in_(_CONTACT.c.id)))


def record_transactions(items: Sequence[TransactionInput]) -> list[TransactionOutcome]:
    """Record each transaction; a contact's last transaction moves forward to the newest one,
    which lifts the inactivity hold at once (app.domain.eligibility).

    An idempotency key seen before (in an earlier call, or earlier in this one) records nothing
    and answers with the first transaction. Refused: no such contact, a time more than a day
    ahead (app.domain.transactions)."""
    outcomes: list[TransactionOutcome | None] = [None] * len(items)
    latest = latest_transaction_time(datetime.now(UTC))
    table = _TRANSACTION

    keys = sorted({it.idempotency_key for it in items if it.idempotency_key})
    known: dict[str, Any] = {}
    for part in _chunks(keys):
        for row in db.session.execute(_BY_KEY[_dialect()], {"values": part}):
            known[row.idempotency_key] = row

    # Each address normalised once: {address as given: its key}.
    key_of = {e: address_key(normalize_address(e)) for e in {it.email for it in items
                                                                if it.contact_id is None and it.email}}
    by_email: dict[str, int] = {}
    for part in _chunks(sorted(set(key_of.values()))):
        for id_, key in db.session.execute(_ID_BY_KEY[_dialect()], {"values": part}):
            by_email[key] = id_
    wanted_ids = sorted({it.contact_id for it in items if it.contact_id is not None})
    real_ids: set[int] = set()
    for part in _chunks(wanted_ids):
        real_ids.update(db.session.execute(_REAL_IDS[_dialect()], {"values": part}).scalars())

    values: list[dict[str, Any]] = []
    positions: list[int] = []
    pending_keys: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.idempotency_key and it.idempotency_key in known:
            outcomes[i] = TransactionOutcome(i, "duplicate", _transaction_view(known[it.idempotency_key]))
            continue
        if it.idempotency_key and it.idempotency_key in pending_keys:
            outcomes[i] = TransactionOutcome(i, "duplicate")  # filled in after the insert
            continue
        if it.contact_id is not None:
            contact_id = it.contact_id if it.contact_id in real_ids else None
            where = "contact_id"
        else:
            contact_id = by_email.get(key_of[it.email] if it.email else address_key(""))
            where = "email"
        if contact_id is None:
            outcomes[i] = TransactionOutcome(i, "refused", errors=[
                {"field": where, "detail": "no contact has this " + ("id" if where == "contact_id" else "address")}])
            continue
        when = it.occurred_at.astimezone(UTC)
        if when > latest:
            outcomes[i] = TransactionOutcome(i, "refused", errors=[
                {"field": "occurred_at", "detail": "is more than a day ahead"}])
            continue
        if it.idempotency_key:
            pending_keys[it.idempotency_key] = i
        values.append({"contact_id": contact_id, "occurred_at": when, "reference": it.reference,
                       "amount": it.amount, "source": "api", "idempotency_key": it.idempotency_key})
        positions.append(i)

    if values:
        stmt = _insert(Transaction).returning(*table.c)
        rows = db.session.execute(stmt, values, execution_options={"sort_by_parameter_order": True}).all()
        newest: dict[int, datetime] = {}
        for i, row in zip(positions, rows, strict=True):
            outcomes[i] = TransactionOutcome(i, "recorded", _transaction_view(row))
            if row.contact_id not in newest or row.occurred_at > newest[row.contact_id]:
                newest[row.contact_id] = row.occurred_at
        _move_last_transaction(newest)
        _credit_conversions(rows)
    for i, it in enumerate(items):
        outcome = outcomes[i]
        if outcome is not None and outcome.status == "duplicate" and outcome.transaction is None:
            first = outcomes[pending_keys[it.idempotency_key or ""]]
            outcome.transaction = first.transaction if first is not None else None
    return [o for o in outcomes if o is not None]


_CLICKED = _lookup(lambda in_: select(Recipient.contact_id).distinct()
                   .join(ResponseEvent, ResponseEvent.recipient_id == Recipient.id)
                   .where(in_(Recipient.contact_id), ResponseEvent.kind == CLICK,
                          ResponseEvent.machine.is_(False),
                          ResponseEvent.occurred_at >= bindparam("earliest")))


def _credit_conversions(rows: Sequence[Any]) -> None:
    """Credit each new transaction to the mailing clicked last before it (app.services.conversions),
    looking only at the contacts who clicked anything in the window: one query for the rest."""
    from app.services import conversions

    earliest = min(row.occurred_at for row in rows) - timedelta(days=conversions.window_days())
    contact_ids = sorted({row.contact_id for row in rows})
    clicked: set[int] = set()
    for part in _chunks(contact_ids):
        clicked.update(cid for cid in db.session.execute(
            _CLICKED[_dialect()], {"values": part, "earliest": earliest}).scalars() if cid is not None)
    for row in rows:
        if row.contact_id in clicked:
            transaction = db.session.get(Transaction, row.id)
            if transaction is not None:
                conversions.attribute(transaction)


def _move_last_transaction(newest: dict[int, datetime]) -> None:
    """last_transaction_at := the newest of it and the contact's transactions, for the contacts
    given (one UPDATE a chunk; the index on (contact_id, occurred_at) finds each maximum, and a
    concurrent older transaction never moves the date back)."""
    if not newest:
        return
    table = Contact.__table__
    tx = Transaction.__table__
    latest = (select(func.max(tx.c.occurred_at)).where(tx.c.contact_id == table.c.id)
              .scalar_subquery())
    now = utcnow()
    for part in _chunks(sorted(newest)):
        db.session.execute(
            update(table)
            .where(table.c.id.in_(part),
                   or_(table.c.last_transaction_at.is_(None), table.c.last_transaction_at < latest))
            .values(last_transaction_at=latest, updated_at=now)
            .execution_options(synchronize_session=False))


# --------------------------------------------------------------------------------------------
# List members
# --------------------------------------------------------------------------------------------


def contact_ids_for(ids: Sequence[int], emails: Sequence[str]) -> tuple[list[int], list[str]]:
    """The contacts named by id or address; and the ids/addresses that name nobody."""
    found: set[int] = set()
    for part in _chunks(sorted(set(ids))):
        found.update(db.session.execute(select(Contact.id).where(Contact.id.in_(part))).scalars())
    missing = [str(i) for i in sorted(set(ids) - found)]
    keys = {address_key(normalize_address(e)): e for e in emails}
    seen: set[str] = set()
    for part in _chunks(sorted(keys)):
        for id_, key in db.session.execute(select(Contact.id, Contact.email_key)
                                           .where(Contact.email_key.in_(part))):
            found.add(id_)
            seen.add(key)
    missing += [keys[k] for k in sorted(set(keys) - seen)]
    return sorted(found), missing


def add_members(contact_list: ContactList, contact_ids: Sequence[int]) -> int:
    """Add contacts to a plain list; the number newly added."""
    before = _member_count(contact_list.id)
    if contact_ids:
        now = utcnow()
        db.session.execute(_insert(ListMember).on_conflict_do_nothing(),
                           [{"list_id": contact_list.id, "contact_id": cid, "added_at": now}
                            for cid in contact_ids])
    return _member_count(contact_list.id) - before


def remove_members(contact_list: ContactList, contact_ids: Sequence[int]) -> int:
    removed = 0
    for part in _chunks(list(contact_ids)):
        result = db.session.execute(delete(ListMember).where(
            ListMember.list_id == contact_list.id, ListMember.contact_id.in_(part)))
        removed += result.rowcount  # type: ignore[attr-defined]
    return removed


def _member_count(list_id: int) -> int:
    return int(db.session.execute(select(func.count()).select_from(ListMember)
                                  .where(ListMember.list_id == list_id)).scalar_one())

"""The suppression list: addresses kept only as the SHA-256 of the normalised (trimmed,
lower-cased) address, with why.

- ``erased``: a contact erased on request. The person's data is gone and no CSV import, API
  upsert or one-off can bring the address back.
- ``hard_bounce`` / ``complaint``: a message to an address that had no contact (a transactional
  email to a bare address) bounced for good or drew a spam complaint. The next transactional email
  to that bare address is refused. Such an address may still become a contact (an import, an API
  upsert): the new contact starts do-not-email (and invalid, after a hard bounce), as a contact
  that bounced or complained would be; staff may lift that flag knowingly. See README, "API".

One row per address; a stronger reason replaces a weaker one (erased > hard bounce > complaint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.domain.eligibility import address_key, normalize_address
from app.extensions import db
from app.models import Contact, Suppression, utcnow

CHUNK = 500
ERASED = "erased"
HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
_RANK = {COMPLAINT: 1, HARD_BOUNCE: 2, ERASED: 3}
# What a contact created at a remembered address starts with: the words the response rules use
# for a contact that bounced or complained itself (app.services.responses).
CONTACT_REASON = {HARD_BOUNCE: "hard bounce", COMPLAINT: "spam complaint"}


def address_hash(address: str) -> str:
    """SHA-256 (hex) of the address as contacts are identified: trimmed and lower-cased."""
    key = address_key(normalize_address(address))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _reasons(keys: Iterable[str]) -> dict[str, str]:
    """{address key: reason} for those of the keys on the list."""
    by_hash = {address_hash(k): k for k in keys}
    found: dict[str, str] = {}
    hashes = list(by_hash)
    for start in range(0, len(hashes), CHUNK):
        part = hashes[start:start + CHUNK]
        for digest, reason in db.session.execute(
                select(Suppression.email_hash, Suppression.reason)
                .where(Suppression.email_hash.in_(part))):
            found[by_hash[digest]] = reason
    return found


def erased_keys(keys: Iterable[str]) -> set[str]:
    """Those of the address keys (Contact.email_key values) that were erased."""
    return {k for k, reason in _reasons(keys).items() if reason == ERASED}


def reason_for(address: str) -> str | None:
    """Why the address is on the list, or None."""
    row = db.session.get(Suppression, address_hash(address))
    return row.reason if row is not None else None


def is_erased(address: str) -> bool:
    return reason_for(address) == ERASED


def suppress(address: str, reason: str = ERASED) -> str:
    """Put the address on the list (idempotent; a stronger reason replaces a weaker one, never
    the reverse); the hash is returned."""
    digest = address_hash(address)
    row = db.session.get(Suppression, digest)
    if row is None:
        db.session.add(Suppression(email_hash=digest, reason=reason[:50], created_at=utcnow()))
        db.session.flush()
    elif _RANK.get(reason, 0) > _RANK.get(row.reason, 0):
        row.reason = reason[:50]
        db.session.flush()
    return digest


def remember(reasons: Mapping[str, str]) -> None:
    """Record hard bounces and complaints of addresses that have no contact ({address: reason});
    the caller holds the write lock (the response batch does)."""
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    for address in sorted(reasons):
        if "@" not in address:  # an erased recipient's address is blanked: nothing to remember
            continue
        digest, reason = address_hash(address), reasons[address]
        # ON CONFLICT: a concurrent batch may remember the same address at the same moment.
        db.session.execute(insert(Suppression).values(email_hash=digest, reason=reason,
                                                      created_at=now)
                           .on_conflict_do_nothing(index_elements=["email_hash"]))
        if reason == HARD_BOUNCE:
            db.session.execute(update(Suppression).where(Suppression.email_hash == digest,
                                                         Suppression.reason == COMPLAINT)
                               .values(reason=HARD_BOUNCE)
                               .execution_options(synchronize_session=False))


def carry_to_new_contacts(ids_by_key: Mapping[str, int]) -> int:
    """Contacts just created ({email_key: id}) at an address that hard-bounced or complained
    before it was a contact start do-not-email (and invalid after a hard bounce). Returns how
    many were marked."""
    marked = 0
    reasons = _reasons(ids_by_key)
    now = utcnow()
    for reason, values in ((HARD_BOUNCE, {"valid": False, "invalid_reason": "hard bounce"}),
                           (COMPLAINT, {})):
        ids = sorted(ids_by_key[k] for k, r in reasons.items() if r == reason)
        for start in range(0, len(ids), CHUNK):
            part = ids[start:start + CHUNK]
            db.session.execute(
                update(Contact).where(Contact.id.in_(part))
                .values(do_not_email=True, do_not_email_reason=CONTACT_REASON[reason],
                        updated_at=now, **values)
                .execution_options(synchronize_session=False))
            marked += len(part)
    return marked

"""Erased addresses: only the SHA-256 of the normalised (trimmed, lower-cased) address is kept, so
the person's data is gone and no CSV import, API upsert or one-off can bring the address back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import select

from app.domain.eligibility import address_key, normalize_address
from app.extensions import db
from app.models import Suppression, utcnow

CHUNK = 500


def address_hash(address: str) -> str:
    """SHA-256 (hex) of the address as contacts are identified: trimmed and lower-cased."""
    key = address_key(normalize_address(address))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def erased_keys(keys: Iterable[str]) -> set[str]:
    """Those of the address keys (Contact.email_key values) that were erased."""
    by_hash = {address_hash(k): k for k in keys}
    found: set[str] = set()
    hashes = list(by_hash)
    for start in range(0, len(hashes), CHUNK):
        part = hashes[start:start + CHUNK]
        found.update(db.session.execute(
            select(Suppression.email_hash).where(Suppression.email_hash.in_(part))).scalars())
    return {by_hash[h] for h in found}


def is_erased(address: str) -> bool:
    return db.session.get(Suppression, address_hash(address)) is not None


def suppress(address: str, reason: str = "erased") -> str:
    """Keep the address's hash (idempotent); the hash is returned."""
    digest = address_hash(address)
    if db.session.get(Suppression, digest) is None:
        db.session.add(Suppression(email_hash=digest, reason=reason[:50], created_at=utcnow()))
        db.session.flush()
    return digest

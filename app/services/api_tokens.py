"""API tokens: created with a name and scopes, shown once, kept as a SHA-256, revoked by admins.

No commit here: the view that calls these commits (see docs/ARCHITECTURE.md, "API").
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from app.api.auth import SCOPES, hash_token
from app.extensions import db
from app.models import ApiToken, User, utcnow

TOKEN_PREFIX = "sb_"
MAX_NAME = 100
MIN_RATE, MAX_RATE, DEFAULT_RATE = 1, 100_000, 600


class TokenError(ValueError):
    """A token that cannot be created as asked; the message is for the admin."""


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # the whole token: shown once, never stored


def create_token(name: str, scopes: Iterable[str], *, rate_per_minute: int = DEFAULT_RATE,
                 created_by: User | None = None) -> NewToken:
    """A new token; its secret is in the result and nowhere else."""
    name = name.strip()
    if not name:
        raise TokenError("a token needs a name")
    if len(name) > MAX_NAME:
        raise TokenError(f"a token name has at most {MAX_NAME} characters")
    chosen = sorted(set(scopes))
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise TokenError(f"unknown scope {unknown[0]!r}")
    if not chosen:
        raise TokenError("choose at least one scope")
    if not MIN_RATE <= rate_per_minute <= MAX_RATE:
        raise TokenError(f"the rate is {MIN_RATE:,} to {MAX_RATE:,} calls a minute")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, prefix=secret[:10], token_hash=hash_token(secret), scopes=chosen,
                     rate_per_minute=rate_per_minute,
                     created_by_id=created_by.id if created_by is not None else None)
    db.session.add(token)
    db.session.flush()
    return NewToken(token=token, secret=secret)


def list_tokens() -> list[ApiToken]:
    """Active tokens first, newest first."""
    stmt = select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())
    return list(db.session.execute(stmt).scalars())


def get_token(token_id: int) -> ApiToken | None:
    return db.session.get(ApiToken, token_id)


def revoke(token: ApiToken) -> bool:
    """Revoke the token at once; False when it was revoked already."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    return True

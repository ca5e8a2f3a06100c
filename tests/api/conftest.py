"""Fixtures of the API tests: tokens with chosen scopes, and a count of every table an API call
could change (to show a refused call changed nothing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    ApiToken,
    AuditEntry,
    Contact,
    ContactList,
    ListMember,
    Suppression,
    Transaction,
    TypeOptOut,
)
from app.services.api_tokens import create_token

ALL_SCOPES = ["contacts:read", "contacts:write", "transactions:write"]


@pytest.fixture
def make_token(app) -> Callable[..., tuple[ApiToken, dict[str, str]]]:
    def make(scopes: list[str] | None = None, *, name: str = "shop", rate: int = 10_000
             ) -> tuple[ApiToken, dict[str, str]]:
        made = create_token(name, scopes if scopes is not None else ALL_SCOPES, rate_per_minute=rate)
        db.session.commit()
        return made.token, {"Authorization": f"Bearer {made.secret}"}

    return make


@pytest.fixture
def headers(make_token) -> dict[str, str]:
    return make_token()[1]


def table_counts() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (Contact, Transaction, ListMember, ContactList, TypeOptOut, Suppression, AuditEntry):
        out[model.__tablename__] = db.session.execute(select(func.count()).select_from(model)).scalar_one()
    out["contacts_state"] = sorted(
        (c.id, c.email, c.name, c.do_not_email, str(c.fields), c.time_zone, str(c.last_transaction_at))
        for c in db.session.execute(select(Contact)).scalars())
    db.session.expire_all()
    return out


def add_contact(email: str, **values: Any) -> Contact:
    from app.domain.eligibility import address_key

    contact = Contact(email=email, email_key=address_key(email), **values)
    db.session.add(contact)
    db.session.commit()
    return contact

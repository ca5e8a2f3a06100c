"""Sending providers and email types, as the settings page edits them.

Nothing here commits: the settings view commits once, with its audit entry (docs/ARCHITECTURE.md,
Layering).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import EmailType, Provider


class ProviderError(Exception):
    """A provider or email type that cannot be saved; the message says why."""


@dataclass(frozen=True)
class ProviderValues:
    """A provider as typed on the settings page. `password` and `connections` None: keep the
    stored ones (a new provider starts with the table's default connections)."""

    name: str
    kind: str = "smtp"
    host: str = ""
    port: int = 25
    security: str = "none"
    username: str = ""
    password: str | None = None
    rate_per_second: float = 0.0
    connections: int | None = None
    reports_events: bool = False
    is_default: bool = False


def all_providers() -> list[Provider]:
    return list(db.session.execute(select(Provider).order_by(Provider.name)).scalars())


def get_provider(provider_id: int) -> Provider | None:
    return db.session.get(Provider, provider_id)


def save_provider(provider: Provider, values: ProviderValues) -> Provider:
    """Store a new or changed provider; ProviderError when another one has its name."""
    name = values.name.strip()
    others = select(Provider.id).where(Provider.name == name)
    if provider.id is not None:
        others = others.where(Provider.id != provider.id)
    if db.session.execute(others).first() is not None:
        raise ProviderError(f"A provider named {name} exists already.")
    provider.name = name
    provider.kind = values.kind or "smtp"
    provider.host = values.host.strip()
    provider.port = values.port
    provider.security = values.security or "none"
    provider.username = values.username
    if values.password:  # blank keeps the stored password
        provider.password = values.password
    provider.rate_per_second = values.rate_per_second
    if values.connections is not None:
        provider.connections = values.connections
    provider.reports_events = values.reports_events
    if values.is_default:
        db.session.execute(update(Provider).values(is_default=False))
        provider.is_default = True
    elif provider.is_default:
        provider.is_default = False
    db.session.add(provider)
    try:
        db.session.flush()
    except IntegrityError as exc:  # the same name saved by another request meanwhile
        raise ProviderError(f"A provider named {name} exists already.") from exc
    return provider


def make_default(provider: Provider) -> None:
    """Send mail through `provider` from the next batch on."""
    db.session.execute(update(Provider).values(is_default=False))
    provider.is_default = True


def email_types() -> list[EmailType]:
    return list(db.session.execute(select(EmailType).order_by(EmailType.name)).scalars())


def add_email_type(name: str, description: str = "", transactional: bool = False) -> EmailType:
    """A new email type; ProviderError when one has that name already."""
    name = name.strip()
    if db.session.execute(select(EmailType.id).where(EmailType.name == name)).first() is not None:
        raise ProviderError(f"The email type {name} exists already.")
    email_type = EmailType(name=name, description=description, transactional=transactional)
    db.session.add(email_type)
    try:
        db.session.flush()
    except IntegrityError as exc:
        raise ProviderError(f"The email type {name} exists already.") from exc
    return email_type

"""Demo data for a first run: an admin, two email types, a list of customers and a draft mailing.

The password of the demo admin is random and is kept in ``instance/demo-login.txt`` (readable only
by the owner) so `sendboard run` can show it again on later runs, as long as it still works.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    EmailType,
    ListMember,
    Mailing,
    MailingList,
    Transaction,
    User,
    utcnow,
)

# A .local address: the editor's address rule checks form only (no DNS, special-use domains
# accepted), so the demo's own addresses save as seeded.
DEMO_EMAIL = "demo@sendboard.local"
DEMO_LIST = "Demo customers"
DEMO_MAILING = "Welcome to Sendboard (demo)"
LOGIN_FILE = "demo-login.txt"

FIRST_NAMES = [
    "Alice", "Bruno", "Chloé", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
    "Kemal", "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tara",
    "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zoé", "Anton", "Bea", "Carlos", "Dana",
    "Emil", "Fatima", "Gustav", "Hanna", "Ivo", "Julia", "Karim", "Lotte", "Milan", "Nadia",
    "Omar", "Paula", "Rami", "Sofia", "Tomás",
]
DOMAINS = ["example.com", "example.org", "example.net"]

HTML_BODY = """<!doctype html>
<html><body style="font-family: sans-serif; color: #1d2330">
  <h1 style="color: #2f5bea">Hello {{ name }},</h1>
  <p>This is the demo mailing of your new Sendboard. It goes to the list
     <b>Demo customers</b>; the local capture server keeps every message, so nothing leaves
     this machine.</p>
  <p><a href="https://example.com/spring-offers">See this spring's offers</a></p>
  <p style="color: #667085; font-size: 12px">You receive this because you are a demo customer.
     <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""

TEXT_BODY = """Hello {{ name }},

This is the demo mailing of your new Sendboard. It goes to the list "Demo customers"; the local
capture server keeps every message, so nothing leaves this machine.

See this spring's offers: https://example.com/spring-offers

You receive this because you are a demo customer. Unsubscribe: {{ unsubscribe_url }}
"""


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str | None  # None when the demo user existed and its password is not known here


def _login_file() -> Path:
    return Path(current_app.config["INSTANCE_DIR"]) / LOGIN_FILE


def needs_demo() -> bool:
    """True on a first run: the database has no user yet."""
    return db.session.execute(select(func.count(User.id))).scalar_one() == 0


def seed_demo() -> DemoLogin:
    """Create whatever part of the demo data is missing; safe to run again."""
    login = _ensure_admin()
    types = {name: _ensure_type(name, desc) for name, desc in (
        ("Newsletter", "News about the shop, about once a month."),
        ("Offers", "Discounts and seasonal offers."),
    )}
    demo_list = _ensure_list()
    _ensure_segment()
    owner = db.session.execute(select(User).where(User.email == DEMO_EMAIL)).scalar_one()
    if db.session.execute(select(Mailing).where(Mailing.name == DEMO_MAILING)).first() is None:
        mailing = Mailing(
            name=DEMO_MAILING,
            subject="Hello {{ name }}, welcome to Sendboard",
            from_name="Sendboard demo shop",
            from_address="shop@sendboard.local",
            reply_to="shop@sendboard.local",
            html_body=HTML_BODY,
            text_body=TEXT_BODY,
            email_type_id=types["Newsletter"].id,
            owner_id=owner.id,
        )
        db.session.add(mailing)
        db.session.flush()
        db.session.add(MailingList(mailing_id=mailing.id, list_id=demo_list.id))
    db.session.commit()
    return login


def stored_login() -> DemoLogin | None:
    """The demo login written at seeding, if that password still opens the demo account."""
    path = _login_file()
    try:
        email, password = path.read_text(encoding="utf-8").split("\n")[:2]
    except (FileNotFoundError, ValueError):
        return None
    user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    if user is None or not user.check_password(password):
        return None
    return DemoLogin(email, password)


def _ensure_admin() -> DemoLogin:
    user = db.session.execute(select(User).where(User.email == DEMO_EMAIL)).scalar_one_or_none()
    if user is not None:
        return stored_login() or DemoLogin(DEMO_EMAIL, None)
    password = secrets.token_urlsafe(12)
    user = User(email=DEMO_EMAIL, name="Demo admin", role="admin")
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    path = _login_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only: this is a password, even if only for a local demo.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"{DEMO_EMAIL}\n{password}\n")
    return DemoLogin(DEMO_EMAIL, password)


def _ensure_type(name: str, description: str) -> EmailType:
    found = db.session.execute(select(EmailType).where(EmailType.name == name)).scalar_one_or_none()
    if found is None:
        found = EmailType(name=name, description=description)
        db.session.add(found)
        db.session.flush()
    return found


def demo_contacts() -> list[dict[str, object]]:
    """The demo audience: mostly ordinary customers, plus the cases the eligibility rules catch."""
    now = utcnow()
    people: list[dict[str, object]] = []
    for i, first in enumerate(FIRST_NAMES):
        address = f"{first.lower().replace('é', 'e').replace('á', 'a')}.demo{i}@{DOMAINS[i % 3]}"
        people.append({
            "email": address, "name": first,
            "fields": {"city": ["Lyon", "Porto", "Gent", "Graz"][i % 4], "plan": "basic"},
            "last_transaction_at": now - timedelta(days=3 + 11 * i),
        })
    people += [
        # Fails the address checks: shown as Invalid address, never sent.
        {"email": "missing-at-sign.example.com", "name": "Broken", "valid": False,
         "invalid_reason": "no @ in the address"},
        {"email": "double@@example.com", "name": "Doubled", "valid": False,
         "invalid_reason": "two @ signs"},
        # No purchase for three years: Suppressed (inactive 2 years).
        {"email": "sleepy.customer@example.org", "name": "Sleepy",
         "last_transaction_at": now - timedelta(days=3 * 365)},
        {"email": "old.friend@example.net", "name": "Olga",
         "last_transaction_at": now - timedelta(days=800)},
        # Asked not to be emailed: Canceled (do not email).
        {"email": "no.thanks@example.com", "name": "Nils", "do_not_email": True,
         "do_not_email_reason": "unsubscribed", "last_transaction_at": now - timedelta(days=20)},
        {"email": "hard.bounce@example.org", "name": "Hannes", "do_not_email": True,
         "do_not_email_reason": "hard bounce", "valid": False, "invalid_reason": "hard bounce",
         "last_transaction_at": now - timedelta(days=40)},
    ]
    return people


DEMO_SEGMENT = "Bought this year"


def _ensure_segment() -> None:
    """A segment beside the list, so the audience choice shows both kinds."""
    exists = db.session.execute(
        select(ContactList.id).where(ContactList.name == DEMO_SEGMENT)
    ).first()
    if exists is None:
        db.session.add(ContactList(
            name=DEMO_SEGMENT, description="Customers with a purchase in the last 365 days.",
            rule={"match": "all", "conditions": [
                {"subject": "last_transaction", "op": "within_days", "value": 365}]},
        ))
        db.session.flush()


def _ensure_list() -> ContactList:
    demo_list = db.session.execute(
        select(ContactList).where(ContactList.name == DEMO_LIST)
    ).scalar_one_or_none()
    if demo_list is None:
        demo_list = ContactList(
            name=DEMO_LIST, description="Sample customers for trying Sendboard."
        )
        db.session.add(demo_list)
        db.session.flush()
    for person in demo_contacts():
        key = str(person["email"]).lower()
        contact = db.session.execute(
            select(Contact).where(Contact.email_key == key)
        ).scalar_one_or_none()
        if contact is None:
            last = person.pop("last_transaction_at", None)
            contact = Contact(email_key=key, **person)
            contact.last_transaction_at = last  # type: ignore[assignment]
            db.session.add(contact)
            db.session.flush()
            if last is not None:
                db.session.add(Transaction(
                    contact_id=contact.id, occurred_at=last, reference="demo", source="cli",
                ))
        member = db.session.get(ListMember, (demo_list.id, contact.id))
        if member is None:
            db.session.add(ListMember(list_id=demo_list.id, contact_id=contact.id))
    db.session.flush()
    return demo_list

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import (
    Contact,
    ContactList,
    EmailType,
    ListMember,
    Mailing,
    MailingList,
    User,
    utcnow,
)
from app.runtime.demo import DEMO_EMAIL, needs_demo, seed_demo, stored_login
from app.services import segments as segments_service
from app.services.users import authenticate


def _count(model: type) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_seed_demo_creates_a_usable_demo_once(app: Flask) -> None:
    assert needs_demo()
    login = seed_demo()
    assert login.email == DEMO_EMAIL and login.password
    user = authenticate(DEMO_EMAIL, login.password)
    assert user is not None and user.is_admin
    assert stored_login() == login

    names = set(db.session.execute(select(EmailType.name)).scalars())
    assert names == {"Newsletter", "Offers"}
    members = _count(ListMember)
    assert 45 <= members <= 60
    contacts = list(db.session.execute(select(Contact)).scalars())
    assert any(not c.valid for c in contacts)
    assert any(c.do_not_email for c in contacts)
    two_years_ago = utcnow() - timedelta(days=730)
    assert any(c.last_transaction_at and c.last_transaction_at < two_years_ago
               and not c.do_not_email for c in contacts)
    mailing = db.session.execute(select(Mailing)).scalar_one()
    assert mailing.status == Status.DRAFT.value
    assert "{{ name }}" in mailing.html_body and "{{ name }}" in mailing.text_body
    assert mailing.owner_id == user.id
    assert _count(MailingList) == 1
    segment = db.session.execute(select(ContactList).where(ContactList.rule.is_not(None)))
    bought = segment.scalar_one()
    picked = segments_service.count(segments_service.rule_of(bought))
    recent = sum(1 for c in contacts if c.last_transaction_at
                 and c.last_transaction_at > utcnow() - timedelta(days=365))
    assert 0 < picked == recent < len(contacts)

    again = seed_demo()
    assert again == login
    assert (_count(User), _count(Contact), _count(ListMember), _count(Mailing),
            _count(ContactList)) == (1, len(contacts), members, 1, 2)
    assert not needs_demo()

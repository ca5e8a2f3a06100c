"""Contacts service: transactions, search, flags, type opt-outs and lists."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from app.extensions import db
from app.models import EmailType
from app.services import contacts
from app.services.contacts import ContactError, import_csv


def _seed(text: str) -> None:
    import_csv(io.BytesIO(text.encode()), list_name=None)


def test_record_transaction_lifts_inactivity_and_never_moves_back(app: Flask) -> None:
    old = datetime.now(UTC) - timedelta(days=800)
    _seed(f"email,last_transaction\nada@example.org,{old.date().isoformat()}\n")
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None
    assert contacts.is_inactive(ada, 730)

    recent = datetime.now(UTC) - timedelta(days=3)
    transaction = contacts.record_transaction(
        "ADA@example.org", recent, reference="order 42", amount="19.90"
    )
    assert transaction.contact_id == ada.id
    assert (transaction.reference, transaction.amount, transaction.source) == (
        "order 42",
        "19.90",
        "api",
    )
    db.session.expire_all()
    ada = contacts.get_contact(ada.id)
    assert ada is not None
    assert ada.last_transaction_at == recent
    assert not contacts.is_inactive(ada, 730)

    # An older transaction is kept in the history but does not move the date back.
    contacts.record_transaction(ada.id, old, reference="late entry")
    db.session.expire_all()
    ada = contacts.get_contact(ada.id)
    assert ada is not None and ada.last_transaction_at == recent
    # Newest first; the CSV's transaction (midnight of the old day) has no reference.
    assert [t.reference for t in contacts.contact_transactions(ada.id)] == [
        "order 42",
        "late entry",
        "",
    ]


def test_record_transaction_history_order(app: Flask) -> None:
    _seed("email\nada@example.org\n")
    first = datetime(2024, 1, 1, tzinfo=UTC)
    second = datetime(2024, 2, 1, tzinfo=UTC)
    contacts.record_transaction("ada@example.org", second, reference="second")
    contacts.record_transaction("ada@example.org", first, reference="first")
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None
    assert [t.reference for t in contacts.contact_transactions(ada.id)] == ["second", "first"]
    assert ada.last_transaction_at == second


def test_record_transaction_naive_time_is_utc_and_unknown_contact_is_refused(app: Flask) -> None:
    _seed("email\nada@example.org\n")
    contacts.record_transaction("ada@example.org", datetime(2024, 5, 1, 9, 0))
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None and ada.last_transaction_at == datetime(2024, 5, 1, 9, tzinfo=UTC)
    with pytest.raises(ContactError):
        contacts.record_transaction("nobody@example.org", datetime.now(UTC))
    with pytest.raises(ContactError):
        contacts.record_transaction(999_999, datetime.now(UTC))


def test_search_by_address_or_name_with_keyset_pages(app: Flask) -> None:
    _seed(
        "email,name\n"
        + "".join(f"p{i:02d}@example.org,Person {i}\n" for i in range(25))
        + "zed@other.org,Zed_Under\n"
    )

    page, cursor = contacts.search_contacts("example.org", None, None, 10)
    assert [c.email for c in page] == [f"p{i:02d}@example.org" for i in range(24, 14, -1)]
    assert cursor == page[-1].id
    page2, cursor2 = contacts.search_contacts("example.org", None, cursor, 10)
    page3, cursor3 = contacts.search_contacts("example.org", None, cursor2, 10)
    assert len(page2) == 10 and len(page3) == 5 and cursor3 is None
    assert not {c.id for c in page} & {c.id for c in page2}

    assert [c.email for c in contacts.search_contacts("ZED_", None, None, 10)[0]] == [
        "zed@other.org"
    ]
    # LIKE wildcards in the search are taken literally.
    assert contacts.search_contacts("p_0", None, None, 10)[0] == []
    assert [c.name for c in contacts.search_contacts("person 7", None, None, 10)[0]] == ["Person 7"]


def test_search_flags(app: Flask) -> None:
    recent = (datetime.now(UTC) - timedelta(days=10)).date().isoformat()
    old = (datetime.now(UTC) - timedelta(days=1000)).date().isoformat()
    _seed(
        "email,last_transaction\n"
        f"active@example.org,{recent}\nold@example.org,{old}\nnever@example.org,\n"
        f"dne@example.org,{recent}\nbad@example.org,{recent}\n"
    )
    dne = contacts.find_contact("dne@example.org")
    bad = contacts.find_contact("bad@example.org")
    assert dne is not None and bad is not None
    contacts.set_do_not_email(dne, "asked by phone")
    bad.valid = False
    bad.invalid_reason = "hard bounce"
    # Without any transaction, inactivity counts from when the contact was added.
    added_long_ago = contacts.find_contact("never@example.org")
    assert added_long_ago is not None
    added_long_ago.created_at = datetime.now(UTC) - timedelta(days=731)
    _seed("email\nfresh@example.org\n")
    db.session.commit()

    def emails(flag: str, days: int = 730) -> set[str]:
        return {
            c.email for c in contacts.search_contacts("", flag, None, 50, inactivity_days=days)[0]
        }

    assert emails("do_not_email") == {"dne@example.org"}
    assert emails("invalid") == {"bad@example.org"}
    assert emails("inactive") == {"old@example.org", "never@example.org"}
    assert emails("inactive", days=0) == set()  # 0 days: the suppression is off
    with pytest.raises(ContactError):
        contacts.search_contacts("", "bogus", None, 10)

    assert dne.do_not_email_reason == "asked by phone"
    contacts.clear_do_not_email(dne)
    assert emails("do_not_email") == set()


def test_type_opt_out_and_in(app: Flask) -> None:
    _seed("email\nada@example.org\n")
    ada = contacts.find_contact("ada@example.org")
    assert ada is not None
    news = EmailType(name="Newsletter")
    db.session.add(news)
    db.session.commit()

    contacts.opt_out_type(ada.id, news.id)
    contacts.opt_out_type(ada.id, news.id)  # twice is harmless
    assert contacts.type_opt_outs(ada.id) == {news.id}
    contacts.opt_in_type(ada.id, news.id)
    assert contacts.type_opt_outs(ada.id) == set()


def test_lists_crud_and_counts(app: Flask) -> None:
    empty = contacts.create_list("Empty", "nobody yet")
    with pytest.raises(ContactError, match="exists already"):
        contacts.create_list(" Empty ")
    with pytest.raises(ContactError):
        contacts.create_list("   ")
    import_csv(io.BytesIO(b"email\na@example.org\nb@example.org\n"), list_name="Two")

    counts = {lst.name: n for lst, n in contacts.lists_with_counts()}
    assert counts == {"Empty": 0, "Two": 2}
    assert contacts.list_member_count(empty.id) == 0

    a = contacts.find_contact("a@example.org")
    assert a is not None
    contacts.add_to_list(empty.id, [a.id, a.id])
    assert contacts.list_member_count(empty.id) == 1
    assert [lst.name for lst in contacts.contact_lists(a.id)] == ["Empty", "Two"]
    page, _ = contacts.search_contacts("", None, None, 10, list_id=empty.id)
    assert [c.email for c in page] == ["a@example.org"]

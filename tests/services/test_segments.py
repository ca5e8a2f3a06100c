"""Segments: every condition as SQL on real contacts, audiences built from segments and lists,
and the places a segment must not be treated as a list."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.domain.responses import Response
from app.domain.segments import SegmentError, parse
from app.extensions import db
from app.models import Contact, Mailing, MailingList, Recipient
from app.services import audience, contacts, segments
from app.services.contacts import ContactError, ImportFileError, import_csv

NOW = datetime.now(UTC)

PEOPLE = """email,name,city,tier,last_transaction
ann@example.org,Ann Archer,Lyon,gold,{recent}
bob@example.org,Bob Baker,lyon,,{old}
cy@shop.test,Cy Cooper,Paris,silver,
dee@shop.test,Dee 50% Off,,gold,{recent}
"""


@pytest.fixture
def people(app):
    recent = (NOW - timedelta(days=30)).date().isoformat()
    old = (NOW - timedelta(days=900)).date().isoformat()
    import_csv(io.BytesIO(PEOPLE.format(recent=recent, old=old).encode()), list_name=None)
    vip = contacts.create_list("VIP")
    contacts.add_to_list(vip.id, [_id("ann@example.org"), _id("cy@shop.test")])
    return vip


def _id(email: str) -> int:
    return db.session.scalar(select(Contact.id).where(Contact.email_key == email))


def picked(rule: dict) -> set[str]:
    condition = segments.condition_sql(parse(rule))
    return set(db.session.scalars(select(Contact.email_key).where(condition)))


def one(subject: str, op: str, value=None, key=None) -> dict:
    return {"match": "all", "conditions": [
        {"subject": subject, "op": op, "value": value, "key": key}]}


@pytest.mark.parametrize(("rule", "expected"), [
    (one("email", "ends_with", "@SHOP.test"), {"cy@shop.test", "dee@shop.test"}),
    (one("email", "starts_with", "ann"), {"ann@example.org"}),
    (one("name", "contains", "baker"), {"bob@example.org"}),
    (one("name", "contains", "50%"), {"dee@shop.test"}),  # % is a character, not a wildcard
    (one("name", "not_contains", "O"), {"ann@example.org"}),  # "Dee 50% Off" has an o too
    (one("field", "equals", "LYON", "city"), {"ann@example.org", "bob@example.org"}),
    (one("field", "not_equals", "lyon", "city"),
     {"cy@shop.test", "dee@shop.test"}),  # an empty field is "not lyon" too
    (one("field", "is_set", key="tier"), {"ann@example.org", "cy@shop.test", "dee@shop.test"}),
    (one("field", "is_not_set", key="tier"), {"bob@example.org"}),
    (one("field", "is_set", key="no such field"), set()),
    (one("last_transaction", "within_days", 365), {"ann@example.org", "dee@shop.test"}),
    (one("last_transaction", "before_days", 365), {"bob@example.org"}),
    (one("last_transaction", "never"), {"cy@shop.test"}),
    (one("created", "within_days", 1), {"ann@example.org", "bob@example.org", "cy@shop.test",
                                        "dee@shop.test"}),
    (one("created", "before_days", 1), set()),
])
def test_each_condition_picks_the_right_contacts(people, rule, expected):
    assert picked(rule) == expected


def test_lists_and_match_modes(people):
    in_vip = {"subject": "list", "op": "in_list", "value": people.id}
    gold = {"subject": "field", "key": "tier", "op": "equals", "value": "gold"}
    assert picked({"match": "all", "conditions": [in_vip]}) == {"ann@example.org", "cy@shop.test"}
    assert picked({"match": "all", "conditions": [{**in_vip, "op": "not_in_list"}]}) == {
        "bob@example.org", "dee@shop.test"}
    assert picked({"match": "all", "conditions": [in_vip, gold]}) == {"ann@example.org"}
    assert picked({"match": "any", "conditions": [in_vip, gold]}) == {
        "ann@example.org", "cy@shop.test", "dee@shop.test"}


def test_a_mailing_to_a_segment_and_a_list_suppresses_and_deduplicates(people):
    lyon = segments.create_segment(
        "Lyon", parse(one("field", "equals", "lyon", "city")), "customers in Lyon")
    mailing = Mailing(name="Lyon news", status="draft", prevent_duplicates=True)
    db.session.add(mailing)
    db.session.flush()
    db.session.add_all([MailingList(mailing_id=mailing.id, list_id=people.id),
                        MailingList(mailing_id=mailing.id, list_id=lyon.id)])
    db.session.flush()
    contacts.set_do_not_email(db.session.get(Contact, _id("bob@example.org")), "asked")
    preview = audience.preview_counts(mailing)
    counts = audience.materialise(mailing)
    assert preview == counts
    rows = dict(db.session.execute(select(Recipient.address, Recipient.response).where(
        Recipient.mailing_id == mailing.id, Recipient.response != Response.DUPLICATE.value)).all())
    # Ann is in VIP and in Lyon: one message (the second membership is a duplicate); Bob is
    # in Lyon but do-not-email; Cy comes from VIP.
    assert rows == {"ann@example.org": "planned", "bob@example.org": "do_not_email",
                    "cy@shop.test": "planned"}
    assert counts == {"planned": 2, "do_not_email": 1, "duplicate": 1}


def test_a_segment_includes_contacts_added_after_it_was_saved(people):
    shop = segments.create_segment("Shop", parse(one("email", "ends_with", "@shop.test")))
    assert dict(contacts.lists_with_counts())[shop] == 2
    import_csv(io.BytesIO(b"email\neve@shop.test\n"), list_name=None)
    assert dict(contacts.lists_with_counts())[shop] == 3
    page, _ = contacts.search_contacts(list_id=shop.id)
    assert {c.email_key for c in page} == {"cy@shop.test", "dee@shop.test", "eve@shop.test"}


def test_saving_refuses_what_cannot_work(people):
    rule = parse(one("email", "contains", "x"))
    segments.create_segment("Has x", rule)
    with pytest.raises(ContactError, match="exists already"):
        segments.create_segment("VIP", rule)
    with pytest.raises(SegmentError, match="does not exist"):
        segments.create_segment("Ghost list", parse(one("list", "in_list", 9999)))
    other = segments.create_segment("Gold", parse(one("field", "equals", "gold", "tier")))
    with pytest.raises(SegmentError, match="segment can refer to lists only"):
        segments.create_segment("Nested", parse(one("list", "in_list", other.id)))
    with pytest.raises(ContactError, match="is a list, not a segment"):
        segments.update_segment(people, name="VIP", rule=rule)
    segments.update_segment(other, name="Gold tier", rule=parse(one("field", "equals", "silver",
                                                                    "tier")))
    assert other.name == "Gold tier" and other.rule["conditions"][0]["value"] == "silver"
    assert segments.description(other) == "field 'tier' is 'silver'"


def test_nobody_is_added_to_a_segment_by_hand_or_by_import(people):
    shop = segments.create_segment("Shop", parse(one("email", "ends_with", "@shop.test")))
    with pytest.raises(ContactError, match="is a segment"):
        contacts.add_to_list(shop.id, [_id("ann@example.org")])
    with pytest.raises(ImportFileError, match="is a segment"):
        import_csv(io.BytesIO(b"email\nzed@example.org\n"), list_name="Shop")
    result = import_csv(io.BytesIO(b"email,list\nzed@example.org,Shop\nyan@example.org,VIP\n"),
                        list_name=None)
    assert result.created == 1 and [(e.line, "segment" in e.reason) for e in result.errors] == [
        (2, True)]
    assert _id("zed@example.org") is None and _id("yan@example.org") is not None

"""The rules of a transactional request and the transactional email type's eligibility."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain import transactional as rules
from app.domain.eligibility import ContactFacts, check
from app.domain.responses import Response

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def facts(**values) -> ContactFacts:
    base = dict(address="ana@example.org", do_not_email=False, valid=True,
                opted_out_types=frozenset(), last_transaction=NOW, created=NOW)
    base.update(values)
    return ContactFacts(**base)


@pytest.mark.parametrize(("given", "plain", "transactional"), [
    (facts(), None, None),
    (facts(do_not_email=True), Response.DO_NOT_EMAIL, Response.DO_NOT_EMAIL),
    (facts(valid=False), Response.INVALID_ADDRESS, Response.INVALID_ADDRESS),
    (facts(address="no-at-sign"), Response.INVALID_ADDRESS, Response.INVALID_ADDRESS),
    (facts(opted_out_types=frozenset({7})), Response.TYPE_UNSUBSCRIBED, None),
    (facts(last_transaction=NOW - timedelta(days=800)), Response.INACTIVE, None),
    (facts(last_transaction=None, created=NOW - timedelta(days=800)), Response.INACTIVE, None),
    (facts(do_not_email=True, opted_out_types=frozenset({7})), Response.DO_NOT_EMAIL,
     Response.DO_NOT_EMAIL),
])
def test_a_transactional_type_skips_opt_outs_and_the_hold_only(given, plain, transactional):
    hold = timedelta(days=730)
    assert check(given, email_type=7, now=NOW, inactivity=hold) is plain
    assert check(given, email_type=7, now=NOW, inactivity=hold, transactional=True) is transactional


@pytest.mark.parametrize(("verdict", "suppressed", "expected"), [
    (None, False, None),
    (None, True, rules.Refusal.SUPPRESSED),
    (Response.DO_NOT_EMAIL, True, rules.Refusal.SUPPRESSED),
    (Response.DO_NOT_EMAIL, False, rules.Refusal.DO_NOT_EMAIL),
    (Response.TYPE_UNSUBSCRIBED, False, rules.Refusal.TYPE_UNSUBSCRIBED),
    (Response.INACTIVE, False, rules.Refusal.INACTIVE),
    (Response.INVALID_ADDRESS, False, rules.Refusal.INVALID_ADDRESS),
])
def test_refusal(verdict, suppressed, expected):
    assert rules.refusal(verdict, suppressed=suppressed) is expected


def test_every_refusal_is_explained_with_the_address():
    for refusal in rules.Refusal:
        text = rules.explain(refusal, address="ana@example.org", type_name="Offers",
                             reason="hard bounce", inactivity_days=730)
        assert "ana@example.org" in text
    assert "'Offers'" in rules.explain(rules.Refusal.TYPE_UNSUBSCRIBED, address="a@b.org",
                                       type_name="Offers")


@pytest.mark.parametrize(("key", "ok"), [
    ("order-1042", True), ("a" * 200, True), ("", False), ("a" * 201, False), ("a b", False),
    ("é", False), ("tab\there", False),
])
def test_idempotency_keys(key, ok):
    assert (rules.key_problem(key) is None) is ok


@pytest.mark.parametrize(("data", "bad"), [
    ({"order": "1", "items": [{"sku": "x"}]}, None),
    ({"name": "x"}, "name"),
    ({"unsubscribe_url": "x"}, "unsubscribe_url"),
    ({"": 1}, ""),
    ({"k" * 101: 1}, "k" * 101),
    ({"note": ["ok", {"deep": "nul\x00"}]}, "note"),
])
def test_merge_data(data, bad):
    found = rules.data_problem(data)
    assert (found[0] if found else None) == bad


def test_status_groups():
    assert rules.status_of(Response.PLANNED) == rules.status_of(Response.DEFERRED) == "queued"
    assert rules.status_of(Response.HARD_BOUNCE) == rules.status_of(Response.OPENED) == "sent"
    assert rules.status_of(Response.DO_NOT_EMAIL) == "not_sent"

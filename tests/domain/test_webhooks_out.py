"""Outbound webhook rules: signatures, the retry schedule, destinations, the pump's runs, bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from app.domain import webhooks_out as rules

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"events":[]}'
    expected = hmac.new(b"whsec_k", b"1795430400." + body, hashlib.sha256).hexdigest()
    assert rules.sign("whsec_k", 1795430400, body) == f"v1={expected}"
    headers = rules.headers("whsec_k", 1795430400, body, 42)
    assert headers["Sendboard-Signature"] == f"v1={expected}"
    assert (headers["Sendboard-Timestamp"], headers["Sendboard-Delivery"]) == ("1795430400", "42")


@pytest.mark.parametrize("secret,timestamp,body,now,ok", [
    ("k", "1000", b"x", 1000, True),
    ("k", "1000", b"x", 1300, True),
    ("k", "1000", b"x", 1301, False),  # outside the tolerance
    ("k", "1000", b"x", 699, False),
    ("other", "1000", b"x", 1000, False),
    ("k", "1000", b"y", 1000, False),
    ("k", "10x0", b"x", 1000, False),
    ("k", "", b"x", 1000, False),
])
def test_verify(secret, timestamp, body, now, ok):
    signature = rules.sign("k", 1000, b"x")
    assert rules.verify(secret, timestamp, body, signature, now) is ok


def test_verify_accepts_any_of_several_signatures():
    both = rules.sign("old", 1000, b"x") + ", " + rules.sign("new", 1000, b"x")
    assert rules.verify("new", "1000", b"x", both, 1000)
    assert rules.verify("old", "1000", b"x", both, 1000)


def test_secrets_are_fresh():
    a, b = rules.new_secret(), rules.new_secret()
    assert a != b and a.startswith("whsec_") and len(a) >= 48


def test_success_is_2xx_only():
    assert [rules.is_success(c) for c in (200, 204, 299, 301, 404, 500, None)] == [
        True, True, True, False, False, False, False]


def test_after_failure_gives_up_24_hours_after_the_first_attempt():
    fate = rules.after_failure(failed_attempts=2, first_attempt_at=T0,
                               now=T0 + timedelta(minutes=1), failing_since=None)
    assert fate.next_attempt_at == T0 + timedelta(minutes=3) and not fate.give_up
    fate = rules.after_failure(failed_attempts=28, first_attempt_at=T0,
                               now=T0 + timedelta(hours=24), failing_since=T0)
    assert fate.give_up and fate.next_attempt_at is None and fate.disable_endpoint


@pytest.mark.parametrize("address,allowed_privately", [
    ("127.0.0.1", True), ("::1", True), ("10.0.0.1", True), ("172.16.5.4", True),
    ("192.168.1.1", True), ("169.254.169.254", True), ("fe80::1", True), ("fd00::1", True),
    ("100.64.0.1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("224.0.0.1", False),
    ("ff02::1", False), ("240.0.0.1", True),
])
def test_addresses_refused(address, allowed_privately):
    assert rules.address_refusal(address, allow_private=False)
    assert (rules.address_refusal(address, allow_private=True) is None) is allowed_privately


@pytest.mark.parametrize("address", [
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "fec0::1",  # site-local (deprecated, still routed inside some networks)
])
def test_ipv6_forms_of_private_ipv4_and_site_local_refused(address):
    assert rules.address_refusal(address, allow_private=False)


def test_6to4_of_a_public_address_is_judged_by_that_address():
    assert rules.address_refusal("2002:5db8:d70e::1", allow_private=False) is None  # 93.184.215.14


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                     "8.8.8.8"])
def test_public_addresses_accepted(address):
    assert rules.address_refusal(address, allow_private=False) is None


@pytest.mark.parametrize("url", ["", "ftp://x.example/", "http:///path", "https://x.example:0/",
                                 "https://u:p@x.example/", "https://x.example/a b",
                                 "https://bücher.example/", "http://x.example:99999/",
                                 "javascript:alert(1)", "https://" + "a" * 2000])
def test_urls_refused(url):
    assert rules.url_refusal(url)


def test_url_parts():
    assert rules.url_refusal("https://hooks.example.com:8443/in?x=1") is None
    assert rules.host_and_port("https://hooks.example.com:8443/in") == (
        "hooks.example.com", 8443, True)
    assert rules.host_and_port("http://hooks.example.com/in") == ("hooks.example.com", 80, False)


def test_wants():
    assert rules.wants([], "open") and rules.wants(None, "click")
    assert rules.wants(["open"], "open") and not rules.wants(["open"], "click")


def test_deliverable_up_to():
    fresh, old = T0, T0 - timedelta(seconds=11)
    assert rules.deliverable_up_to(0, [], T0) == 0
    assert rules.deliverable_up_to(0, [(1, fresh), (2, fresh), (3, fresh)], T0) == 3
    # A fresh gap holds the run before it; an old one is passed over.
    assert rules.deliverable_up_to(0, [(1, fresh), (3, fresh)], T0) == 1
    assert rules.deliverable_up_to(0, [(1, fresh), (3, old), (4, fresh)], T0) == 4
    assert rules.deliverable_up_to(5, [(7, fresh)], T0) == 5


def test_body_has_stable_names_and_zoned_times():
    event = rules.event_json(event_id=3, kind="click", mailing_id=1, recipient_id=2,
                             email="ada@example.org", occurred_at=datetime(2026, 11, 23, 10, 0),
                             detail={"url": "https://shop.example/"})
    parsed = json.loads(rules.body([event]))
    assert parsed == {"events": [{"id": 3, "kind": "click", "mailing_id": 1, "recipient_id": 2,
                                  "email": "ada@example.org",
                                  "occurred_at": "2026-11-23T10:00:00+00:00",
                                  "detail": {"url": "https://shop.example/"}}]}

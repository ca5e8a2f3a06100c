"""No input gives a 5xx on the routes of A/B tests, send windows, time zones, resends,
conversions, API tokens and integrations: each is first shown to be reached (a real id, a signed
in admin: the view answers, not a 404), then fed hostile forms of its own field names (huge ids,
NUL bytes, lone surrogates, wrong types, missing fields) and a 10 MB body.

The walk over the whole URL map (test_fuzz_routes.py) draws one route at a time; this module makes
sure these routes get past their 404 and their form parsing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import config, create_app
from app.domain.responses import Response
from app.extensions import db
from app.models import (
    Contact,
    EmailType,
    Mailing,
    MailingVariant,
    Recipient,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.services import totals

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_NASTY = st.sampled_from([
    "", " ", "0", "-1", "1", "2", "on", "y", "true", str(2**31), str(2**63), "9" * 40, "1e400",
    "nan", "inf", "1.5", "0x10", "00:00", "24:00", "23:59", "25:61", "12:5", "-1:00", "9:00",
    "Europe/Berlin", "UTC", "localtime", "../../etc/passwd", "Etc/../UTC", "A" * 5000, "a\x00b",
    "\x00", "\ud800", "é", "open", "click", "non_openers", "deferred", "home", "index",
    "//evil.example/", "https://evil.example/", "javascript:alert(1)", "http://[::1]/",
    "http://2130706433/", "http://0177.0.0.1/", "https://hooks.example.com/in", "http://a:b@x/",
    "mailings:read", "contacts:write", "tx:send", "s" * 16, "s" * 129,
    "<script>alert(1)</script>", "{{ 7*7 }}",
])
VALUES = st.one_of(_NASTY, _TEXT)

VARIANT_FIELDS = [f"variant_{kind}_{n}" for kind in ("subject", "from") for n in range(5)]
# (method, path with {names} of the world's ids, the form fields the view reads)
ROUTES: list[tuple[str, str, list[str]]] = [
    ("POST", "/mailings/{ab}/ab-winner", ["variant_id"]),
    ("POST", "/mailings/{draft}/ab-window",
     ["ab", "ab_share", "ab_wait_minutes", "ab_metric", "window", "window_start", "window_end",
      "window_day", "local_delivery", *VARIANT_FIELDS]),
    ("POST", "/mailings/{sent}/resend", ["audience", "subject", "next"]),
    ("POST", "/mailings/{sent}/conversions", ["next"]),
    ("POST", "/contacts/{contact}/time-zone", ["time_zone"]),
    ("POST", "/settings/time-zone", ["time_zone"]),
    ("POST", "/settings/email-types/{email_type}/transactional", ["transactional"]),
    ("GET", "/settings/api-tokens", []),
    ("POST", "/settings/api-tokens", ["name", "scopes", "rate_per_minute"]),
    ("POST", "/settings/api-tokens/{token}/revoke", []),
    ("GET", "/integrations", []),
    ("POST", "/integrations/webhooks", ["name", "url", "event_kinds", "secret", "active"]),
    ("GET", "/integrations/webhooks/{endpoint}", ["before"]),
    ("POST", "/integrations/webhooks/{endpoint}",
     ["name", "url", "event_kinds", "secret", "active"]),
    ("POST", "/integrations/webhooks/{endpoint}/secret", ["secret"]),
    ("POST", "/integrations/webhooks/{endpoint}/enable", []),
    ("POST", "/integrations/deliveries/{delivery}/send-again", []),
    ("GET", "/api/docs", []),
    ("GET", "/home", []),
]


def _fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """No name is looked up for real: every host is a documentation address (or loopback)."""
    address = "127.0.0.1" if str(host) in ("localhost", "2130706433", "0177.0.0.1") else "192.0.2.7"
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: str
          ) -> Iterator[tuple[Flask, dict[str, int], dict[str, FlaskClient]]]:
    from app.services.api_tokens import create_token
    from app.services.users import create_user

    patch = pytest.MonkeyPatch()
    patch.setattr(socket, "getaddrinfo", _fake_getaddrinfo)
    app = create_app(config.TestConfig(str(tmp_path_factory.mktemp("fuzz-new"))))
    with app.app_context():
        db.create_all()
        for role in ("admin", "editor", "viewer"):
            create_user(email=f"{role}@example.org", password="correct horse", role=role)
        now = datetime.now(UTC)
        contact = Contact(email="ann@example.org", email_key="ann@example.org")
        email_type = EmailType(name="Receipts")
        sent = Mailing(name="Sent", status="sent", subject="Hi", from_address="a@example.org",
                       started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1))
        draft = Mailing(name="Draft", status="draft", subject="Hi", from_address="a@example.org")
        ab = Mailing(name="A/B", status="sending", subject="Hi", from_address="a@example.org",
                     ab_share=20, ab_wait_minutes=60, ab_metric="open", started_at=now)
        endpoint = WebhookEndpoint(name="CRM", url="https://hooks.example.com/in",
                                   secret="whsec_" + "s" * 40, event_kinds=[])
        db.session.add_all([contact, email_type, sent, draft, ab, endpoint])
        db.session.flush()
        db.session.add_all([
            Recipient(mailing_id=sent.id, contact_id=contact.id, address=contact.email,
                      response=Response.DELIVERED.value, handed_off_at=now,
                      message_id="fuzz.2@sendboard.local"),
            MailingVariant(mailing_id=ab.id, position=0, subject="A"),
            MailingVariant(mailing_id=ab.id, position=1, subject="B"),
            WebhookDelivery(endpoint_id=endpoint.id, body="[]", status="failed", attempts=3),
        ])
        totals.bump(sent.id, {"response:delivered": 1, "handed_off": 1})
        token = create_token("fuzz", ["contacts:read"]).token
        db.session.commit()
        ids = {"ab": ab.id, "draft": draft.id, "sent": sent.id, "contact": contact.id,
               "email_type": email_type.id, "token": token.id, "endpoint": endpoint.id,
               "delivery": db.session.query(WebhookDelivery.id).scalar()}
        clients = {}
        for role in ("admin", "editor"):
            client = app.test_client()
            answer = client.post("/login", data={"email": f"{role}@example.org",
                                                 "password": "correct horse"})
            assert answer.status_code == 302
            clients[role] = client
        yield app, ids, clients
        db.session.remove()
        db.engine.dispose()
    patch.undo()


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k.encode('utf-8', 'surrogatepass'), safe='')}="
                    f"{quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in pairs)


@pytest.mark.parametrize(("method", "path", "fields"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_each_route_is_reached_with_a_real_id(world, method, path, fields):
    """An admin with a real id gets the view's own answer: never 404, 405 or a 5xx."""
    app, ids, clients = world
    with app.app_context():
        url = path.format(**ids)
        response = clients["admin"].open(url, method=method, data={})
        assert response.status_code not in (404, 405), (url, response.status_code)
        assert response.status_code < 500, (url, response.status_code)
        # The same route with an id no row has is the view's 404.
        if "{" in path:
            missing = path.format(**{k: 10**12 for k in ids})
            assert clients["admin"].open(missing, method=method).status_code == 404, missing


@pytest.mark.parametrize("role", ["admin", "editor"])
@pytest.mark.parametrize(("method", "path", "fields"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_hostile_forms_never_answer_5xx(world, role, method, path, fields):
    app, ids, clients = world

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(pairs=st.lists(st.tuples(st.sampled_from(fields or ["x"]) | _TEXT, VALUES), max_size=12),
           in_query=st.booleans())
    def run(pairs: list[tuple[str, str]], in_query: bool) -> None:
        with app.app_context():
            url = path.format(**ids)
            body = _encode(pairs)
            if method == "GET" or in_query:
                url += "?" + body
                body = ""
            response = clients[role].open(url, method=method, data=body,
                                          content_type="application/x-www-form-urlencoded")
            assert response.status_code < 500, (method, url, pairs, response.status_code,
                                                response.get_data(as_text=True)[-1500:])

    run()


@pytest.mark.parametrize(("method", "path", "fields"),
                         [r for r in ROUTES if r[0] == "POST"], ids=lambda v: str(v)[:60])
def test_wrong_bodies_never_answer_5xx(world, method, path, fields):
    """A JSON body, a 10 MB field, NUL bytes in every field, a field given twice."""
    app, ids, clients = world
    with app.app_context():
        url = path.format(**ids)
        client = clients["admin"]
        bodies = [
            ("application/json", '{"' + (fields or ["x"])[0] + '": [1, {"a": null}]}'),
            ("application/x-www-form-urlencoded", _encode([((fields or ["x"])[0], "x" * 10_000_000)])),
            ("application/x-www-form-urlencoded", _encode([(f, "a\x00b") for f in fields])),
            ("application/x-www-form-urlencoded", _encode([(f, v) for f in fields
                                                           for v in ("1", "\ud800")])),
            ("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data\r\n\r\n"),
            ("application/x-www-form-urlencoded", "%ZZ=%%&=&&" + "%ff" * 100),
        ]
        for content_type, body in bodies:
            response = client.open(url, method=method, data=body, content_type=content_type)
            assert response.status_code < 500, (url, content_type, response.status_code,
                                                response.get_data(as_text=True)[-1500:])

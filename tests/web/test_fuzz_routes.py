"""No input gives a 5xx: every route of the URL map, fuzzed signed out and as each role.

Hypothesis draws a route, path parameters (real ids, zero, negative, past 64 bits, text with NUL
bytes, lone surrogates and 5,000 characters), a query string and a form body made of the field
names the app reads plus junk, or a JSON body. Every answer must be below 500; under /api/v1
(called with a token holding every scope) every error is problem+json. The webhooks have
their own fuzz test (test_webhooks_fuzz.py); static files are Flask's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import config, create_app
from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient
from app.services import totals

FIELDS = (
    "action active after amount before box condition conditions contact delay_days description "
    "domain email email_type_id file flag from_address from_name host html_body is_default key "
    "key_file kind last list list_id list_name lists local_time mailing_id match name next "
    "occurred_at older op owner_id page password port prevent_duplicates private_key q "
    "rate_per_second reason reference remember reply_to reports_events role scope security "
    "selector send_at send_until subject tab text_body username utm_campaign utm_medium "
    "utm_source value zone conditions-0-field conditions-0-op conditions-0-value "
    "contacts contact_id contact_ids emails fields time_zone do_not_email occurred_at transactions "
    "idempotency_key email_type_id limit cursor list_id updated_since "
    "ab ab_share ab_wait_minutes ab_metric window window_start window_end window_day "
    "local_delivery variant_id variant_subject_0 variant_from_1 audience transactional url "
    "event_kinds secret scopes rate_per_minute connections"
).split()

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_NASTY = st.sampled_from([
    "", " ", "0", "-1", "1", "2", "3", "9" * 30, str(2**31), str(2**63), str(-2**63), "1e400",
    "inf", "-inf", "nan", "NaN", "1.5", "0x10", "9999-12-31T23:59", "0001-01-01T00:00",
    "2026-13-45T25:61", "Europe/Paris", "X" * 300, "A" * 5000, "a\x00b", "\x00", "%", "_%\\",
    "<script>alert(1)</script>", "{{ 7*7 }}", "{% for i in range(10**9) %}x{% endfor %}",
    "../../etc/passwd", "\ud800", "é", "user@example.org", "@", "a@b", "true", "false", "on",
    "all", "any", "type", "opened", "non_openers", "admin", "viewer", "editor",
])
VALUES = st.one_of(_NASTY, _TEXT)


def _path_value(converter: str, ids: list[int]) -> st.SearchStrategy[str]:
    if converter == "IntegerConverter":
        return st.one_of(st.sampled_from(ids), st.sampled_from([0, 1, 2**31, 2**62, 2**63, 10**30]),
                         st.integers(min_value=0, max_value=2**70)).map(str)
    return st.one_of(_NASTY, _TEXT.filter(lambda s: "/" not in s))


def _routes(app: Flask) -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/webhooks"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            converters = {name: type(conv).__name__ for name, conv in rule._converters.items()}
            out.append((rule.rule, method, converters))
    return sorted(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[tuple[Flask, list[int]]]:
    """One app with demo data, a sent mailing with recipients, and a user of every role."""
    from app.runtime.demo import seed_demo
    from app.services.users import create_user

    app = create_app(config.TestConfig(str(tmp_path_factory.mktemp("fuzz"))))
    with app.app_context():
        db.create_all()
        seed_demo()
        for role in ("admin", "editor", "viewer"):
            create_user(email=f"{role}@example.org", password="correct horse", role=role)
        now = datetime.now(UTC)
        sent = Mailing(name="Sent", status="sent", subject="Hi {{ name }}", from_address="a@example.org",
                       started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1))
        db.session.add(sent)
        db.session.flush()
        contact = db.session.query(Contact).first()
        db.session.add(Recipient(mailing_id=sent.id, contact_id=contact.id, address=contact.email,
                                 response=Response.DELIVERED.value, handed_off_at=now,
                                 message_id="fuzz.1@sendboard.local"))
        totals.bump(sent.id, {"response:delivered": 1, "handed_off": 1})
        db.session.commit()
        ids = sorted({1, 2, 3, sent.id, contact.id,
                      *(r.id for r in db.session.query(Recipient.id).limit(3))})
        from app.api.auth import SCOPES
        from app.services.api_tokens import create_token

        app.config["FUZZ_API_TOKEN"] = create_token("fuzz", list(SCOPES), rate_per_minute=100_000).secret
        db.session.commit()
        yield app, ids
        db.session.remove()
        db.engine.dispose()


def _request(app: Flask, role: str | None, data: Any) -> None:
    rule, method, converters = data["route"]
    path = rule
    for name, value in data["params"].items():
        path = path.replace(f"<{'int:' if converters[name] == 'IntegerConverter' else ''}{name}>",
                            quote(value.encode("utf-8", "surrogatepass"), safe=""))
    client = app.test_client()
    if role is not None:
        answer = client.post("/login", data={"email": f"{role}@example.org",
                                             "password": "correct horse"})
        assert answer.status_code == 302, answer.status_code
    query = "&".join(f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
                     for k, v in data["query"])
    url = path + ("?" + query if query else "")
    kwargs: dict[str, Any] = {}
    if method != "GET":
        if data["json"] is not None:
            kwargs = {"data": data["json"], "content_type": "application/json"}
        else:
            kwargs = {"data": "&".join(
                f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
                for k, v in data["form"]), "content_type": "application/x-www-form-urlencoded"}
    headers = {"HX-Request": "true"} if data["htmx"] else {}
    api = rule.startswith("/api/v1")
    if api and data.get("token", True):
        headers["Authorization"] = f"Bearer {app.config['FUZZ_API_TOKEN']}"
    response = client.open(url, method=method, headers=headers, **kwargs)
    assert response.status_code < 500, (method, url, kwargs, response.status_code,
                                        response.get_data(as_text=True)[-2000:])
    if api and response.status_code >= 400:
        assert response.mimetype == "application/problem+json", (method, url, response.status_code)
        problem = response.get_json()
        assert problem["status"] == response.status_code and problem["title"], problem


def _inputs(app: Flask, ids: list[int], *, only_api: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    routes = [r for r in _routes(app) if r[0].startswith("/api/v1") or not only_api]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        route = draw(st.sampled_from(routes))
        params = {name: draw(_path_value(conv, ids)) for name, conv in route[2].items()}
        pairs = st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), _TEXT), VALUES), max_size=8)
        json_body = draw(st.one_of(st.none(), st.none(), st.builds(
            lambda v: json.dumps(v), st.recursive(
                st.one_of(st.none(), st.booleans(), st.integers(), _TEXT),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                    st.sampled_from(FIELDS), inner, max_size=4), max_leaves=10))))
        if only_api and json_body is None:
            json_body = draw(st.sampled_from(["", "{", "[]", "null", "1e400", '{"contacts": [1]}',
                                              '{"transactions": [{}]}', '"\\ud800"', "[" * 3000]))
        return {"route": route, "params": params, "query": draw(pairs), "form": draw(pairs),
                "json": json_body, "htmx": draw(st.booleans()), "token": draw(st.booleans())}

    return build()


@pytest.mark.parametrize("role", [None, "viewer", "editor", "admin"])
def test_no_route_answers_5xx(world, role):
    app, ids = world

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_inputs(app, ids))
    def run(data: dict[str, Any]) -> None:
        with app.app_context():
            _request(app, role, data)

    run()


def test_api_routes_answer_problem_details_to_garbage(world):
    """Every /api/v1 route, with and without a token, JSON bodies of any shape: 4xx problem
    details (or success), never 5xx."""
    app, ids = world

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_inputs(app, ids, only_api=True))
    def run(data: dict[str, Any]) -> None:
        with app.app_context():
            _request(app, None, data)

    run()


@pytest.mark.parametrize(("method", "path", "form"), [
    ("POST", "/contacts/1/types/999999", {}),
    ("POST", "/mailings/audience-count", {"lists": "-1"}),
    ("POST", "/mailings/audience-count", {"lists": str(2**63)}),
    ("POST", "/contacts/segments/count", {"conditions-0-field": "\x00", "match": "all"}),
    ("POST", "/contacts/segments/count", {"conditions-0-value": str(2**63)}),
    ("GET", "/mailings/schedule-check?local_time=9999-12-31T23:59&zone=UTC", {}),
    ("GET", "/mailings/schedule-check?local_time=0001-01-01T00:00&zone=UTC", {}),
    ("GET", "/mailings/schedule-check?local_time=2027-01-01T10:00&zone=" + "A" * 5000, {}),
    ("GET", "/contacts?q=" + "%25_" * 30000, {}),
    ("GET", "/captured/" + "a" * 5000, {}),
    ("GET", "/mailings?older=" + str(2**64), {}),
    ("GET", "/contacts?after=" + str(2**64) + "&list=" + str(2**64), {}),
])
def test_inputs_that_once_gave_500(world, method, path, form):
    app, _ids = world
    with app.app_context():
        client = app.test_client()
        client.post("/login", data={"email": "admin@example.org", "password": "correct horse"})
        response = client.open(path, method=method, data=form)
        assert response.status_code < 500, (path, response.status_code)


@pytest.mark.parametrize("body", ["false", "[1, 2]", "\"text\"", "{\"name\": [1]}"])
def test_staff_pages_refuse_json_bodies(world, body):
    app, _ids = world
    with app.app_context():
        client = app.test_client()
        client.post("/login", data={"email": "editor@example.org", "password": "correct horse"})
        response = client.post("/mailings/new", data=body, content_type="application/json")
        assert response.status_code == 415

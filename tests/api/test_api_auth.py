"""Tokens, scopes, the rate, problem details and the audit trail of API calls."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.api.auth import check_rate, hash_token
from app.api.problems import ApiProblem
from app.extensions import db
from app.models import ApiToken, AuditEntry
from app.services import api_tokens
from tests.api.conftest import add_contact, table_counts

WRITES = [
    ("POST", "/api/v1/contacts", {"email": "new@example.org"}),
    ("POST", "/api/v1/contacts/bulk", {"contacts": [{"email": "bulk@example.org"}]}),
    ("PATCH", "/api/v1/contacts/1", {"do_not_email": True}),
    ("POST", "/api/v1/contacts/1/erase", None),
    ("DELETE", "/api/v1/contacts/1", None),
    ("POST", "/api/v1/transactions", {"contact_id": 1, "occurred_at": "2026-01-01T10:00:00Z"}),
    ("POST", "/api/v1/lists/1/members", {"contact_ids": [1]}),
]


@pytest.fixture
def world(app):
    from app.models import ContactList

    add_contact("anna@example.org", name="Anna")
    db.session.add(ContactList(name="Friends"))
    db.session.commit()


def _call(client, method, path, body, headers):
    return client.open(path, method=method, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_no_token_changes_nothing(client, world, method, path, body):
    before = table_counts()
    response = _call(client, method, path, body, {})
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert table_counts() == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_revoked_token_changes_nothing(client, world, make_token, method, path, body):
    token, headers = make_token()
    api_tokens.revoke(token)
    db.session.commit()
    before = table_counts()
    response = _call(client, method, path, body, headers)
    assert response.status_code == 401
    assert response.get_json()["detail"] == "The token is unknown or revoked."
    assert table_counts() == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_wrong_scope_changes_nothing(client, world, make_token, method, path, body):
    _, headers = make_token(["contacts:read", "mailings:read"])
    before = table_counts()
    response = _call(client, method, path, body, headers)
    assert response.status_code == 403
    problem = response.get_json()
    assert problem["type"] == "/api/docs#problem-missing-scope"
    assert problem["scope"] in {"contacts:write", "transactions:write"}
    assert table_counts() == before


def test_a_session_cookie_is_no_credential(client, auth, world):
    auth.login(role="admin")
    before = table_counts()
    response = client.post("/api/v1/contacts", json={"email": "cookie@example.org"})
    assert response.status_code == 401
    assert table_counts() == before


def test_only_the_hash_is_stored(app, make_token):
    token, headers = make_token()
    secret = headers["Authorization"].split()[1]
    assert token.token_hash == hash_token(secret) and secret not in token.token_hash
    assert token.prefix == secret[:10]
    stored = db.session.execute(select(ApiToken.token_hash, ApiToken.prefix)).all()
    assert all(secret not in value for row in stored for value in row)


def test_last_used_is_set(client, world, make_token):
    token, headers = make_token()
    assert token.last_used_at is None
    assert client.get("/api/v1/contacts/1", headers=headers).status_code == 200
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at is not None


def test_rate_limit_answers_429_with_retry_after(client, world, make_token, redis_conn):
    _, headers = make_token(rate=3)
    codes = [client.get("/api/v1/contacts/1", headers=headers).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    response = client.get("/api/v1/contacts/1", headers=headers)
    assert response.status_code == 429
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert response.get_json()["type"] == "/api/docs#problem-rate-limited"
    # Another token has its own count.
    _, other = make_token(rate=3, name="other")
    assert client.get("/api/v1/contacts/1", headers=other).status_code == 200


def test_a_refused_write_over_the_rate_changes_nothing(client, world, make_token, redis_conn):
    _, headers = make_token(rate=1)
    assert client.get("/api/v1/contacts/1", headers=headers).status_code == 200
    before = table_counts()
    response = client.post("/api/v1/contacts", json={"email": "late@example.org"}, headers=headers)
    assert response.status_code == 429
    assert table_counts() == before


def test_the_window_and_retry_after(app, make_token, redis_conn):
    token, _ = make_token(rate=2)
    start = 1_800_000_000.0 + 45  # 45 s into a minute
    check_rate(token, start)
    check_rate(token, start + 1)
    with pytest.raises(ApiProblem) as refused:
        check_rate(token, start + 2)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "13"
    check_rate(token, start + 15)  # the next minute: counted afresh


def test_rate_counts_in_memory_without_redis(app, make_token, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    token, _ = make_token(rate=1)
    check_rate(token, 1_900_000_000.0)
    with pytest.raises(ApiProblem):
        check_rate(token, 1_900_000_001.0)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/api/v1/nothing-here", 404),
    ("GET", "/api/v1/contacts/999999", 404),
    ("PUT", "/api/v1/contacts/1", 405),
    ("GET", "/api/v1/contacts/1/erase", 405),
])
def test_errors_are_problem_details(client, world, headers, method, path, status):
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == status and problem["instance"] == path
    assert problem["type"] == "about:blank" and problem["title"]
    if status == 405:
        assert "GET" in response.headers["Allow"] or "POST" in response.headers["Allow"]


def test_415_and_400_and_422(client, world, headers):
    response = client.post("/api/v1/contacts", data="email=a@example.org", headers=headers)
    assert (response.status_code, response.mimetype) == (415, "application/problem+json")
    response = client.post("/api/v1/contacts", data="{nope", headers=headers,
                           content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["type"] == "/api/docs#problem-invalid-json"
    response = client.post("/api/v1/contacts", json={"email": "x", "time_zone": "Mars/Base",
                                                    "fields": {"a": float("inf")}}, headers=headers)
    assert response.status_code in {400, 422}
    response = client.post("/api/v1/contacts", json={"email": "x", "time_zone": "Mars/Base",
                                                    "surprise": 1}, headers=headers)
    problem = response.get_json()
    assert response.status_code == 422
    assert {e["field"] for e in problem["errors"]} == {"email", "time_zone", "surprise"}
    assert all(e["detail"] for e in problem["errors"])


def test_413_for_a_body_too_large(client, world, headers, monkeypatch):
    monkeypatch.setattr("app.api.routes.API_MAX_BYTES", 100)
    response = client.post("/api/v1/contacts/bulk", json={"contacts": [{"email": "a@example.org"}] * 20},
                           headers=headers)
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"


def test_500_is_a_problem(app, world, headers, monkeypatch):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("app.services.api_contacts.find", broken)
    response = app.test_client().get("/api/v1/contacts/1", headers=headers)
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert "boom" not in response.get_data(as_text=True)


def test_changes_are_audited_with_the_token_name(client, world, make_token):
    _, headers = make_token(name="Web shop")
    client.post("/api/v1/contacts", json={"email": "bea@example.org"}, headers=headers)
    client.patch("/api/v1/contacts/1", json={"do_not_email": True, "do_not_email_reason": "asked"},
                 headers=headers)
    client.post("/api/v1/transactions", json={"contact_id": 1, "occurred_at": "2026-01-01T10:00:00Z"},
                headers=headers)
    client.post("/api/v1/contacts/1/erase", headers=headers)
    client.get("/api/v1/contacts", headers=headers)  # reads are not audited
    entries = db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
    assert [(e.action, e.user_email, e.user_id) for e in entries] == [
        ("contact.api_create", "API token Web shop", None),
        ("contact.api_update", "API token Web shop", None),
        ("contact.transaction", "API token Web shop", None),
        ("contact.erase", "API token Web shop", None),
    ]
    assert entries[1].target_kind == "contact" and entries[1].target_id == "1"
    assert "do_not_email=on" in entries[1].detail


def test_csrf_does_not_apply_to_the_api(app, client, headers):
    app.config["WTF_CSRF_ENABLED"] = True
    response = client.post("/api/v1/contacts", json={"email": "csrf@example.org"}, headers=headers)
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers
    # The staff sign-in form keeps its CSRF check.
    assert client.post("/login", data={"email": "a@example.org", "password": "x"}).status_code == 400

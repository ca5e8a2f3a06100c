"""The API tokens admin: admins only, the token shown once, stored hashed, revocable."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.api.auth import hash_token
from app.extensions import db
from app.models import ApiToken, AuditEntry


def test_editors_and_viewers_are_refused(client, auth):
    for role in ("editor", "viewer"):
        auth.login(email=f"{role}@example.org", role=role)
        assert client.get("/settings/api-tokens").status_code == 403
        response = client.post("/settings/api-tokens", data={"name": "x", "scopes": "contacts:read",
                                                             "rate_per_minute": "60"})
        assert response.status_code == 403
        auth.logout()
    assert db.session.execute(select(ApiToken)).first() is None


def test_create_use_and_revoke(client, auth):
    auth.login(role="admin")
    page = client.post("/settings/api-tokens", data={
        "name": "Web shop", "scopes": ["contacts:write", "transactions:write"], "rate_per_minute": "120"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    secret = re.search(r'data-testid="token-secret">([^<]+)<', html).group(1)
    token = db.session.execute(select(ApiToken)).scalar_one()
    assert token.token_hash == hash_token(secret)
    assert (token.name, token.scopes, token.rate_per_minute) == (
        "Web shop", ["contacts:write", "transactions:write"], 120)
    listing = client.get("/settings/api-tokens").get_data(as_text=True)
    assert secret not in listing and token.prefix in listing and "never" in listing

    api = client.application.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.post("/api/v1/contacts", json={"email": "a@example.org"}, headers=headers).status_code == 201
    listing = client.get("/settings/api-tokens").get_data(as_text=True)
    assert "never" not in listing

    assert client.post(f"/settings/api-tokens/{token.id}/revoke").status_code == 302
    assert api.post("/api/v1/contacts", json={"email": "b@example.org"}, headers=headers).status_code == 401
    actions = [e.action for e in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()
               if e.action.startswith("api_token")]
    assert actions == ["api_token.create", "api_token.revoke"]


def test_bad_input_is_refused_by_field(client, auth):
    auth.login(role="admin")
    for data in ({"name": "", "scopes": "contacts:read", "rate_per_minute": "60"},
                 {"name": "x", "scopes": "root:all", "rate_per_minute": "60"},
                 {"name": "x", "rate_per_minute": "60"},
                 {"name": "x", "scopes": "contacts:read", "rate_per_minute": "0"},
                 {"name": "x" * 101, "scopes": "contacts:read", "rate_per_minute": "60"}):
        response = client.post("/settings/api-tokens", data=data)
        assert response.status_code == 400, data
    assert db.session.execute(select(ApiToken)).first() is None

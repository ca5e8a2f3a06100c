"""Settings page: admins only, validated settings, SMTP providers, email types, secret names."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import EmailType, Provider, Setting
from app.services import settings

VALID = {"batch_size": "750", "rate_per_second": "12.5", "inactivity_days": "365",
         "bounce_rate_limit": "0.08", "complaint_rate_limit": "0.002",
         "threshold_min_sample": "100", "monthly_quota": "0"}
PATHS = ["/settings", "/settings/providers/1"]


@pytest.mark.parametrize("path", PATHS)
def test_staff_get_403_and_anonymous_go_to_login(auth, client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    auth.login()
    assert client.get(path).status_code == 403
    for post in ("/settings", "/settings/providers", "/settings/email-types",
                 "/settings/providers/1/default"):
        assert client.post(post, data=VALID).status_code == 403


def test_admin_saves_valid_settings(app, auth, client):
    app.config["GENERIC_WEBHOOK_SECRET"] = "do-not-show-this"
    app.config["MAILGUN_WEBHOOK_SIGNING_KEY"] = ""
    auth.login("admin@example.org", role="admin")
    page = client.get("/settings").get_data(as_text=True)
    assert "Batch size" in page and 'href="/users"' in page
    assert "do-not-show-this" not in page
    assert re.search(r"GENERIC_WEBHOOK_SECRET</code></td><td><span class=\"badge sent\">set", page)
    assert re.search(r"MAILGUN_WEBHOOK_SIGNING_KEY</code></td><td><span class=\"badge\">not set", page)
    response = client.post("/settings", data=VALID)
    assert response.status_code == 302
    assert settings.get("batch_size") == 750 and settings.get("rate_per_second") == 12.5


@pytest.mark.parametrize("key,value,message", [
    ("batch_size", "20001", "Batch size must be at most 20,000"),
    ("batch_size", "0", "Batch size must be at least 1"),
    ("batch_size", "1.5", "Batch size: enter a number."),
    ("bounce_rate_limit", "2", "Interrupt at bounce rate must be at most 1"),
    ("monthly_quota", "-1", "must be at least 0"),
])
def test_invalid_settings_are_refused_and_nothing_is_stored(app, auth, client, key, value, message):
    auth.login("admin@example.org", role="admin")
    response = client.post("/settings", data={**VALID, key: value})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert message in body and 'aria-invalid="true"' in body and f'value="{value}"' in body
    assert db.session.execute(select(Setting)).first() is None


def test_providers_add_edit_and_default(app, auth, client):
    auth.login("admin@example.org", role="admin")
    base = {"kind": "smtp", "port": "587", "security": "starttls", "rate_per_second": "0"}
    client.post("/settings/providers", data={**base, "name": "Relay A", "host": "a.example",
                                             "username": "u", "password": "secret-a",
                                             "is_default": "y"})
    client.post("/settings/providers", data={**base, "name": "Relay B", "host": "b.example"})
    a, b = db.session.execute(select(Provider).order_by(Provider.name)).scalars()
    assert a.is_default and not b.is_default and a.password == "secret-a"
    page = client.get("/settings").get_data(as_text=True)
    assert "secret-a" not in page and "a.example:587" in page
    dup = client.post("/settings/providers", data={**base, "name": "Relay A", "host": "x"})
    assert dup.status_code == 422 and "exists already" in dup.get_data(as_text=True)
    bad = client.post("/settings/providers", data={**base, "name": "C", "host": "c", "port": "70000"})
    assert bad.status_code == 422

    client.post(f"/settings/providers/{b.id}/default")
    db.session.refresh(a)
    db.session.refresh(b)
    assert b.is_default and not a.is_default
    edit = client.get(f"/settings/providers/{a.id}").get_data(as_text=True)
    assert "secret-a" not in edit
    client.post(f"/settings/providers/{a.id}", data={**base, "name": "Relay A", "host": "a2.example",
                                                    "password": ""})
    db.session.refresh(a)
    assert a.host == "a2.example" and a.password == "secret-a"  # blank keeps the password


def test_email_types(app, auth, client):
    auth.login("admin@example.org", role="admin")
    assert client.post("/settings/email-types", data={"name": "Offers"}).status_code == 302
    again = client.post("/settings/email-types", data={"name": "Offers"})
    assert again.status_code == 422 and "exists already" in again.get_data(as_text=True)
    assert [t.name for t in db.session.execute(select(EmailType)).scalars()] == ["Offers"]
    assert "Offers" in client.get("/settings").get_data(as_text=True)

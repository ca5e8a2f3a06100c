"""A provider's SMTP connections per worker: set on the provider form, held to 1..50, and what the
sending engine opens."""

from __future__ import annotations

import html

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Provider
from app.providers.relay import default_relay

PROVIDER = {"kind": "smtp", "name": "Relay", "host": "relay.example", "port": "587",
            "security": "starttls", "rate_per_second": "5", "is_default": "y"}


def test_connections_are_set_on_the_provider_form_and_used_by_the_engine(app, auth, client):
    auth.login("admin@example.org", role="admin")
    assert client.post("/settings/providers", data={**PROVIDER, "connections": "12"}).status_code == 302
    provider = db.session.execute(select(Provider)).scalar_one()
    assert provider.connections == 12
    assert default_relay().connections == 12
    page = client.get(f"/settings/providers/{provider.id}").get_data(as_text=True)
    assert 'name="connections"' in page and 'value="12"' in page
    # Left blank on edit: kept.
    assert client.post(f"/settings/providers/{provider.id}", data=PROVIDER).status_code == 302
    db.session.expire_all()
    assert db.session.get(Provider, provider.id).connections == 12


@pytest.mark.parametrize("value,message", [
    ("0", 'SMTP connections per worker: "0" is not allowed; enter a whole number from 1 to 50.'),
    ("51", "enter a whole number from 1 to 50"),
    ("-3", "enter a whole number from 1 to 50"),
    (str(2**63), "enter a whole number from 1 to 50"),
    ("2.5", "Not a valid integer value."),
    ("many", "Not a valid integer value."),
])
def test_connections_out_of_range_are_refused(app, auth, client, value, message):
    auth.login("admin@example.org", role="admin")
    refused = client.post("/settings/providers", data={**PROVIDER, "connections": value})
    assert refused.status_code == 422 and message in html.unescape(refused.get_data(as_text=True))
    assert db.session.execute(select(Provider)).first() is None


def test_the_environment_relay_takes_smtp_connections(app):
    app.config["SMTP_CONNECTIONS"] = 7
    assert default_relay().connections == 7
    db.session.add(Provider(name="Odd", host="x", port=25, connections=0, is_default=True))
    db.session.commit()
    assert default_relay().connections == 1  # a row out of range is held to 1..50

"""A secret shown once (a new API token, a webhook's signing secret) is on a page the browser is
told not to store, so going back or a cache cannot show it again."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.extensions import db
from app.models import WebhookEndpoint
from app.services import outbound


def test_the_new_api_token_page_is_not_stored(client, auth):
    auth.login(role="admin")
    page = client.post("/settings/api-tokens", data={
        "name": "Shop", "scopes": ["contacts:read"], "rate_per_minute": "60"})
    assert page.status_code == 200
    assert re.search(r'data-testid="token-secret">sb_[^<]+<', page.get_data(as_text=True))
    assert page.headers.get("Cache-Control") == "no-store"


def test_a_webhook_secret_page_is_not_stored_and_later_pages_have_no_secret(app, client, auth):
    auth.login(email="admin@example.org", role="admin")
    app.config[outbound.ALLOW_PRIVATE_SETTING] = True
    created = client.post("/integrations/webhooks", data={"name": "CRM",
                                                          "url": "http://127.0.0.1:9/hook"})
    assert created.status_code == 201
    endpoint = db.session.scalar(select(WebhookEndpoint))
    assert endpoint.secret in created.get_data(as_text=True)
    assert created.headers.get("Cache-Control") == "no-store"
    rotated = client.post(f"/integrations/webhooks/{endpoint.id}/secret", data={})
    db.session.refresh(endpoint)
    assert rotated.status_code == 200 and endpoint.secret in rotated.get_data(as_text=True)
    assert rotated.headers.get("Cache-Control") == "no-store"
    later = client.get(f"/integrations/webhooks/{endpoint.id}")
    assert endpoint.secret not in later.get_data(as_text=True)

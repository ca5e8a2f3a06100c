"""Postmark's webhook with no credentials configured (neither its own nor the shared pair)
refuses everything, empty credentials included, and records nothing."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import ResponseEvent


@pytest.mark.parametrize("credentials", [None, b":", b"pm:", b":pw", b"anyone:anything"])
def test_postmark_without_configured_credentials_refuses_everything(app, client, credentials):
    for name in ("POSTMARK_WEBHOOK_USER", "POSTMARK_WEBHOOK_PASSWORD",
                 "SENDBOARD_WEBHOOK_BASIC_USER", "SENDBOARD_WEBHOOK_BASIC_PASSWORD"):
        app.config[name] = ""
    headers = {} if credentials is None else {
        "Authorization": "Basic " + base64.b64encode(credentials).decode()}
    record = {"RecordType": "Delivery", "MessageID": "m", "DeliveredAt": "2026-01-01T00:00:00Z",
              "Recipient": "a@example.org"}
    response = client.post("/webhooks/postmark", json=record, headers=headers)
    assert response.status_code == 401
    assert db.session.scalar(select(func.count()).select_from(ResponseEvent)) == 0


def test_postmark_with_only_a_user_set_refuses_an_empty_password(app, client):
    app.config.update(POSTMARK_WEBHOOK_USER="pm", POSTMARK_WEBHOOK_PASSWORD="",
                      SENDBOARD_WEBHOOK_BASIC_USER="", SENDBOARD_WEBHOOK_BASIC_PASSWORD="")
    headers = {"Authorization": "Basic " + base64.b64encode(b"pm:").decode()}
    response = client.post("/webhooks/postmark", json={"RecordType": "Delivery"}, headers=headers)
    assert response.status_code == 401

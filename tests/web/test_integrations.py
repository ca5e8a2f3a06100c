"""Integrations pages: admins only, endpoints registered and refused, the secret shown once,
the disabled notice, the delivery log as the attempts table has it, and "Send again"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.services import outbound


@pytest.fixture
def admin(auth):
    auth.login("admin@example.org", role="admin")
    return auth


def make_endpoint(url: str = "https://hooks.example.com/in", **values) -> WebhookEndpoint:
    ep = WebhookEndpoint(name="CRM", url=url, secret="whsec_" + "s" * 40, event_kinds=[],
                         **values)
    db.session.add(ep)
    db.session.commit()
    return ep


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_only_admins(client, auth, role):
    ep = make_endpoint()
    auth.login(f"{role}@example.org", role=role)
    assert client.get("/integrations").status_code == 403
    assert client.get(f"/integrations/webhooks/{ep.id}").status_code == 403
    assert client.post("/integrations/webhooks", data={"url": "https://x.example/"}).status_code == 403
    assert client.post(f"/integrations/webhooks/{ep.id}/delete").status_code == 403
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 1
    assert b"Integrations" not in client.get("/home").data


def test_admin_registers_an_endpoint_and_sees_its_secret_once(app, client, admin):
    app.config[outbound.ALLOW_PRIVATE_SETTING] = True
    assert b'href="/integrations"' in client.get("/home").data
    resp = client.post("/integrations/webhooks", data={
        "name": "CRM", "url": "http://127.0.0.1:9/hook", "event_kinds": ["open", "click"]})
    assert resp.status_code == 201, resp.data[:500]
    ep = db.session.scalar(select(WebhookEndpoint))
    assert (ep.name, ep.url, ep.event_kinds) == ("CRM", "http://127.0.0.1:9/hook",
                                                 ["click", "open"])
    shown = re.search(r'id="new-secret".*?<code>([^<]+)</code>', resp.get_data(as_text=True), re.S)
    assert shown and shown.group(1) == ep.secret and ep.secret.startswith("whsec_")
    assert ep.secret not in client.get(f"/integrations/webhooks/{ep.id}").get_data(as_text=True)
    assert db.session.scalar(select(AuditEntry.action).where(
        AuditEntry.action == "webhook.create")) == "webhook.create"


def test_given_secret_is_kept(app, client, admin):
    app.config[outbound.ALLOW_PRIVATE_SETTING] = True
    resp = client.post("/integrations/webhooks", data={
        "url": "http://127.0.0.1:9/", "secret": "my-own-secret-0123456789"})
    assert resp.status_code == 201
    assert db.session.scalar(select(WebhookEndpoint.secret)) == "my-own-secret-0123456789"


@pytest.mark.parametrize("data,why", [
    ({"url": "http://127.0.0.1:9/"}, "loopback"),
    ({"url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
    ({"url": "file:///etc/passwd"}, "Only http"),
    ({"url": "https://x.example/", "event_kinds": ["teleported"]}, "is not a valid choice"),
    ({"url": "https://x.example/", "secret": "short"}, "16"),
    ({"url": ""}, "required"),
    ({"url": "http://" + "a" * 3000}, "2000"),
])
def test_refused_registrations(client, admin, data, why):
    resp = client.post("/integrations/webhooks", data=data)
    assert resp.status_code == 400
    assert why in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_forms_need_csrf(app, client, admin):
    ep = make_endpoint()
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post("/integrations/webhooks", data={"url": "https://x.example/"}).status_code == 400
    assert client.post(f"/integrations/webhooks/{ep.id}/delete").status_code == 400
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 1


def test_disabled_endpoint_is_announced_to_admins(client, auth):
    ep = make_endpoint(disabled_at=datetime.now(UTC), disabled_reason="Every attempt failed")
    auth.login("admin@example.org", role="admin")
    for page in ("/home", "/integrations"):
        body = client.get(page).get_data(as_text=True)
        assert 'id="webhook-disabled-notice"' in body and "CRM" in body, page
    resp = client.post(f"/integrations/webhooks/{ep.id}/enable")
    assert resp.status_code == 302
    db.session.refresh(ep)
    assert ep.disabled_at is None
    assert 'id="webhook-disabled-notice"' not in client.get("/home").get_data(as_text=True)
    auth.logout()
    make_endpoint(disabled_at=datetime.now(UTC))
    auth.login("editor@example.org", role="editor")
    assert 'webhook-disabled-notice' not in client.get("/home").get_data(as_text=True)


def test_delivery_log_figures_equal_the_attempts_table(client, admin):
    ep = make_endpoint()
    t0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    for n, codes in enumerate([[500, None, 200], [404], []]):
        d = WebhookDelivery(endpoint_id=ep.id, first_event_id=n * 10 + 1,
                            last_event_id=n * 10 + 10, events=10, body="{}",
                            status="delivered" if 200 in codes else "pending",
                            attempts=len(codes), next_attempt_at=t0)
        db.session.add(d)
        db.session.flush()
        for i, code in enumerate(codes):
            db.session.add(WebhookAttempt(delivery_id=d.id, at=t0 + timedelta(minutes=i),
                                          status_code=code, latency_ms=17 * (n + 1) + i,
                                          error="" if code else "timed out"))
    db.session.commit()
    body = client.get(f"/integrations/webhooks/{ep.id}").get_data(as_text=True)
    for d in db.session.scalars(select(WebhookDelivery)):
        row = re.search(rf'<tr id="delivery-{d.id}">(.*?)</tr>', body, re.S).group(1)
        shown = [(c, int(ms)) for c, ms in re.findall(
            r'<span class="code">([^<]+)</span>, <span class="latency">(\d+)</span>', row)]
        table = [("no answer" if a.status_code is None else str(a.status_code), a.latency_ms)
                 for a in db.session.scalars(select(WebhookAttempt).where(
                     WebhookAttempt.delivery_id == d.id).order_by(WebhookAttempt.id))]
        assert shown == table
        assert re.search(r'<span class="attempts">(\d+)</span>', row).group(1) == str(len(table))
    assert 'id="pending">2<' in body


def test_send_again_requeues_a_delivery(client, admin):
    ep = make_endpoint()
    d = WebhookDelivery(endpoint_id=ep.id, body="{}", status="failed", attempts=29)
    db.session.add(d)
    db.session.commit()
    resp = client.post(f"/integrations/deliveries/{d.id}/send-again")
    assert resp.status_code == 302
    db.session.refresh(d)
    assert d.status == "pending" and d.next_attempt_at is not None
    assert client.post("/integrations/deliveries/999/send-again").status_code == 404


def test_edit_rotate_and_delete(app, client, admin):
    ep = make_endpoint()
    old = ep.secret
    resp = client.post(f"/integrations/webhooks/{ep.id}", data={
        "name": "CRM 2", "url": ep.url, "event_kinds": ["hard_bounce"], "active": ""})
    assert resp.status_code == 302
    db.session.refresh(ep)
    assert (ep.name, ep.event_kinds, ep.active) == ("CRM 2", ["hard_bounce"], False)
    resp = client.post(f"/integrations/webhooks/{ep.id}", data={"url": "http://10.0.0.1/"})
    assert resp.status_code == 400 and "private" in resp.get_data(as_text=True)
    db.session.refresh(ep)
    assert ep.url == "https://hooks.example.com/in"
    resp = client.post(f"/integrations/webhooks/{ep.id}/secret", data={})
    db.session.refresh(ep)
    assert resp.status_code == 200 and ep.secret != old and ep.secret in resp.get_data(as_text=True)
    assert client.post(f"/integrations/webhooks/{ep.id}/delete").status_code == 302
    assert db.session.get(WebhookEndpoint, ep.id) is None

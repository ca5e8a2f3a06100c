"""The mailings API: figures equal to the dashboard's for a mailing with every response,
recipients by response with cursor pages, timelines, and the actions with their refusals."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.domain.lifecycle import Status
from app.extensions import db
from app.models import AuditEntry, ContactList, ListMember, Mailing, Recipient, ResponseEvent
from tests.api.conftest import add_contact
from tests.factories import build_every_response, figures_of, reasons_of, rows_of, tab_counts_of

READ = ["mailings:read"]
ALL = ["mailings:read", "mailings:write", "mailings:send"]


def api_figures(client, headers, mailing_id: int) -> dict:
    response = client.get(f"/api/v1/mailings/{mailing_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_api_equals_dashboard(client, headers, mailing_id: int) -> dict:
    body = api_figures(client, headers, mailing_id)
    t, p = body["totals"], body["progress"]
    page = client.get(f"/mailings/{mailing_id}").get_data(as_text=True)
    shown = figures_of(page)
    pairs = {
        "audience": t["audience"], "sent": t["sent"], "not_sent": t["not_sent"],
        "split-waiting": t["waiting"], "opens": t["opens"], "opens_human": t["opens_human"],
        "opens_machine": t["opens_machine"], "clicks": t["clicks"],
        "clicks_human": t["clicks_human"], "clicks_machine": t["clicks_machine"],
        "openers": t["openers"], "openers_human": t["people_opened"],
        "openers_machine_only": t["machine_only_openers"], "clickers": t["clickers"],
        "clickers_human": t["people_clicked"], "clickers_machine_only": t["machine_only_clickers"],
        "soft_bounce": t["soft_bounces"], "hard_bounce": t["hard_bounces"],
        "blocked": t["blocked"], "dropped": t["dropped"], "spam": t["complaints"],
        "unsubscribed": t["unsubscribed"], "delivered_known": t["delivered"],
        "progress-sent": p["sent"], "progress-waiting": p["waiting"],
    }
    for key, value in pairs.items():
        assert shown.get(key, 0) == value, (key, shown.get(key), value)
    assert tab_counts_of(page) == t["tabs"]
    assert reasons_of(page) == t["not_sent_by_reason"]
    assert Counter(t["responses"]) == rows_of(mailing_id)
    return body


def test_figures_equal_the_dashboards(app, auth, client, redis_conn, smtp, make_token,  # noqa: F811
                                      monkeypatch):
    auth.login()
    headers = make_token(READ)[1]
    seen: list[dict] = []
    mailing_id = build_every_response(
        app, redis_conn, smtp, monkeypatch,
        lambda mid: seen.append(assert_api_equals_dashboard(client, headers, mid)))
    assert seen and seen[0]["status"] == "sending" and seen[0]["totals"]["waiting"] == 11
    body = assert_api_equals_dashboard(client, headers, mailing_id)
    assert body["status"] == Status.CANCELED.value
    t = body["totals"]
    assert (t["audience"], t["sent"], t["not_sent"]) == (37, 19, 18)
    assert t["waiting"] + t["sent"] + t["not_sent"] == t["audience"]
    assert body["progress"]["percent_sent"] >= 0 and body["started_at"].endswith("Z")

    # The list carries the same totals as the single read.
    listed = client.get("/api/v1/mailings", headers=headers).get_json()
    [row] = [m for m in listed["data"] if m["id"] == mailing_id]
    assert row["totals"] == t and row["progress"] is None

    # Recipients by response, paged 4 at a time: each recipient once, as many as the totals say.
    for response, count in t["responses"].items():
        got = _all_recipients(client, headers, mailing_id, f"response={response}&limit=4")
        assert len(got) == count and {r["response"] for r in got} == {response}
    everyone = _all_recipients(client, headers, mailing_id, "limit=7")
    ids = [r["id"] for r in everyone]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == t["audience"]
    assert set(ids) == set(db.session.execute(
        select(Recipient.id).where(Recipient.mailing_id == mailing_id)).scalars())
    two = _all_recipients(client, headers, mailing_id, "response=opened,clicked&limit=2")
    assert len(two) == t["responses"]["opened"] + t["responses"]["clicked"]

    # A recipient's timeline: the hand-off, then every event recorded, applied or not.
    clicked = next(r for r in everyone if r["response"] == "clicked")
    timeline = client.get(f"/api/v1/mailings/{mailing_id}/recipients/{clicked['id']}/timeline",
                          headers=headers).get_json()
    assert timeline["recipient"]["id"] == clicked["id"]
    events = db.session.execute(select(ResponseEvent.id, ResponseEvent.kind).where(
        ResponseEvent.recipient_id == clicked["id"]).order_by(ResponseEvent.id)).all()
    assert [(e["id"], e["kind"]) for e in timeline["events"][1:]] == [tuple(e) for e in events]
    assert timeline["events"][0]["kind"] == "handed_off"


def _all_recipients(client, headers, mailing_id: int, query: str) -> list[dict]:
    rows: list[dict] = []
    cursor = None
    for _ in range(100):
        url = f"/api/v1/mailings/{mailing_id}/recipients?{query}"
        if cursor:
            url += f"&cursor={cursor}"
        page = client.get(url, headers=headers)
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        rows.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pages never ended")


@pytest.fixture
def audience(app) -> ContactList:
    lst = ContactList(name="Customers")
    db.session.add(lst)
    db.session.commit()
    for n in range(3):
        c = add_contact(f"user{n}@example.org", last_transaction_at=datetime.now(UTC))
        db.session.add(ListMember(list_id=lst.id, contact_id=c.id))
    db.session.commit()
    return lst


DRAFT = {"name": "Autumn", "subject": "Hi {{ name }}", "from_address": "news@shop.example",
         "text": "Hello\nUnsubscribe: {{ unsubscribe_url }}"}


def test_create_schedule_cancel_send_and_refusals(app, client, redis_conn, make_token, audience):
    headers = make_token(ALL)[1]
    created = client.post("/api/v1/mailings", json=DRAFT, headers=headers)
    assert created.status_code == 201, created.get_json()
    draft = created.get_json()
    assert draft["status"] == "draft" and draft["list_ids"] == []
    # No audience: refused with the dashboard's own words.
    refused = client.post(f"/api/v1/mailings/{draft['id']}/send", headers=headers)
    assert refused.status_code == 409
    assert "an audience" in refused.get_json()["detail"]
    assert db.session.get(Mailing, draft["id"]).status == "draft"

    with_list = client.post("/api/v1/mailings", json={**DRAFT, "list_ids": [audience.id]},
                            headers=headers).get_json()
    mid = with_list["id"]
    past = client.post(f"/api/v1/mailings/{mid}/schedule",
                       json={"send_at": "2020-01-01T10:00:00+01:00"}, headers=headers)
    assert past.status_code == 422 and past.get_json()["errors"][0]["field"] == "send_at"
    naive = client.post(f"/api/v1/mailings/{mid}/schedule",
                        json={"send_at": "2030-01-01T10:00:00"}, headers=headers)
    assert naive.status_code == 422 and naive.get_json()["errors"][0]["field"] == "send_at"
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    scheduled = client.post(f"/api/v1/mailings/{mid}/schedule",
                            json={"send_at": when.isoformat(), "zone": "Europe/Paris"},
                            headers=headers)
    assert scheduled.status_code == 200, scheduled.get_json()
    body = scheduled.get_json()
    assert body["status"] == "scheduled" and body["send_at_zone"] == "Europe/Paris"
    assert datetime.fromisoformat(body["send_at"].replace("Z", "+00:00")) == when
    canceled = client.post(f"/api/v1/mailings/{mid}/cancel", headers=headers).get_json()
    assert canceled["status"] == "draft" and canceled["send_at"] is None
    resumed = client.post(f"/api/v1/mailings/{mid}/resume", headers=headers)
    assert resumed.status_code == 409 and resumed.get_json()["detail"]
    sent = client.post(f"/api/v1/mailings/{mid}/send", headers=headers)
    assert sent.status_code == 200 and sent.get_json()["status"] == "preparing"
    actions = db.session.execute(select(AuditEntry.action).where(
        AuditEntry.target_id == str(mid)).order_by(AuditEntry.id)).scalars().all()
    assert actions == ["mailing.create", "mailing.schedule", "mailing.cancel", "mailing.send"]
    assert all(e.startswith("API token") for e in db.session.execute(
        select(AuditEntry.user_email)).scalars())


def test_bad_input_names_the_field(app, client, make_token, audience):
    headers = make_token(ALL)[1]
    cases = [
        ({**DRAFT, "name": ""}, "name"),
        ({**DRAFT, "subject": "{% if %}"}, "subject"),
        ({**DRAFT, "list_ids": [audience.id, 999]}, "list_ids.1"),
        ({**DRAFT, "email_type_id": 999}, "email_type_id"),
        ({**DRAFT, "from_address": "nobody"}, "from_address"),
        ({**DRAFT, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/mailings", json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.get_json()["errors"][0]["field"] == field, response.get_json()
    assert db.session.execute(select(func.count()).select_from(Mailing)).scalar_one() == 0
    for url in ("/api/v1/mailings/99", "/api/v1/mailings/99999999999999999999999",
                "/api/v1/mailings/1/recipients/5/timeline"):
        assert client.get(url, headers=headers).status_code == 404
    bad = client.get("/api/v1/mailings/1/recipients?response=nope", headers=headers)
    assert bad.status_code in (404, 422)
    mid = client.post("/api/v1/mailings", json=DRAFT, headers=headers).get_json()["id"]
    bad = client.get(f"/api/v1/mailings/{mid}/recipients?response=nope", headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "response"
    bad = client.get(f"/api/v1/mailings/{mid}/recipients?cursor=forged", headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "cursor"
    bad = client.post(f"/api/v1/mailings/{mid}/schedule", json={"send_at": "2030-01-01T10:00Z",
                                                               "zone": "Mars/Base"},
                      headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "zone"


def test_scopes_are_enforced_and_a_wrong_scope_changes_nothing(app, client, make_token,
                                                              audience):
    reader = make_token(READ, name="reader")[1]
    writer = make_token(["mailings:write"], name="writer")[1]
    other = make_token(["tx:send", "events:read", "contacts:write"], name="other")[1]
    assert client.post("/api/v1/mailings", json=DRAFT, headers=reader).status_code == 403
    assert client.post("/api/v1/mailings", json=DRAFT, headers=other).status_code == 403
    mid = client.post("/api/v1/mailings", json={**DRAFT, "list_ids": [audience.id]},
                      headers=writer).get_json()["id"]
    before = (db.session.get(Mailing, mid).status,
              db.session.execute(select(func.count()).select_from(Mailing)).scalar_one())
    db.session.expire_all()
    for action in ("send", "cancel", "resume"):
        for headers in (reader, writer, other):
            response = client.post(f"/api/v1/mailings/{mid}/{action}", headers=headers)
            assert response.status_code == 403
            assert response.get_json()["scope"] == "mailings:send"
    response = client.post(f"/api/v1/mailings/{mid}/schedule", headers=writer,
                           json={"send_at": "2030-01-01T10:00:00Z"})
    assert response.status_code == 403
    for url in ("/api/v1/mailings", f"/api/v1/mailings/{mid}",
                f"/api/v1/mailings/{mid}/recipients"):
        assert client.get(url, headers=other).status_code == 403
        assert client.get(url, headers=writer).status_code == 403
        assert client.get(url, headers=reader).status_code == 200
    db.session.expire_all()
    assert (db.session.get(Mailing, mid).status,
            db.session.execute(select(func.count()).select_from(Mailing)).scalar_one()) == before

"""Postmark and Brevo webhooks: realistic payloads (written for these tests after each provider's
documented fields), how each record or event maps to a response, how the recipient is found,
authentication, and repeats ignored."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Contact, Recipient, ResponseEvent
from app.services.tokens import recipient_token
from app.webhooks import parsers
from tests.factories import make_sent_recipients, response_of

NOW = datetime.now(UTC).replace(microsecond=0)
ISO = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")
BASIC = "Basic " + base64.b64encode(b"pm-user:pm-pass").decode()
BREVO_TOKEN = "brevo-token-0123456789"


def read(token: str) -> int | None:
    return 7 if token == "tok-7" else None


# ---------------------------------------------------------------- Postmark, parsed


def pm_bounce(bounce_type: str, code: int, details: str = "", **extra):
    return {"RecordType": "Bounce", "ID": 4001000000 + code, "Type": bounce_type,
            "TypeCode": code, "Name": bounce_type, "Tag": "autumn", "MessageStream": "outbound",
            "MessageID": "8a1f63c2-6c33-4a0e-9d2e-2f0d5e1b7a10", "ServerID": 8123,
            "Description": "The server was unable to deliver your message.",
            "Details": details, "Email": "ada@example.org", "From": "news@shop.example",
            "BouncedAt": ISO, "DumpAvailable": False, "Inactive": code == 1,
            "CanActivate": True, "Subject": "Autumn sale", "Metadata": {"sb_rid": "tok-7"},
            **extra}


@pytest.mark.parametrize("bounce_type,code,details,kind", [
    ("HardBounce", 1, "smtp;550 5.1.1 <ada@example.org>: Recipient address rejected: "
                      "User unknown in virtual mailbox table", "hard_bounce"),
    ("HardBounce", 1, "", "hard_bounce"),
    ("HardBounce", 1, "smtp;550 5.7.1 Message rejected as spam by Content Filtering",
     "blocked"),
    ("Transient", 2, "smtp;421 4.7.0 Try again later, closing connection", "soft_bounce"),
    ("SoftBounce", 4096, "smtp;452 4.2.2 Mailbox full", "soft_bounce"),
    ("DnsError", 256, "DNS lookup timed out", "soft_bounce"),
    ("Unsubscribe", 16, "Please remove me", "unsubscribed"),
    ("AutoResponder", 64, "I am out of the office until Monday", "auto_reply"),
    ("AddressChange", 128, "My new address is ada@new.example", "auto_reply"),
    ("ChallengeVerification", 16384, "Please verify you are human", "auto_reply"),
    ("SpamNotification", 512, "Classified as bulk mail", "blocked"),
    ("VirusNotification", 8192, "Infected attachment", "blocked"),
    ("Blocked", 100006, "smtp;554 5.7.1 Service unavailable; client host blocked using "
                        "zen.spamhaus.org", "blocked"),
    ("DMARCPolicy", 100009, "smtp;550 5.7.1 Unauthenticated email is not accepted due to "
                            "domain's DMARC policy", "blocked"),
    ("BadEmailAddress", 100000, "Invalid address", "hard_bounce"),
    ("SpamComplaint", 100001, "", "spam"),
    ("ManuallyDeactivated", 100002, "", "dropped"),
    ("Unconfirmed", 100003, "", "dropped"),
    ("SMTPApiError", 100007, "", "delivery_error"),
    ("TemplateRenderingFailed", 100010, "", "delivery_error"),
    ("Unknown", 2048, "smtp;550 5.1.1 No such user here", "hard_bounce"),
    ("Unknown", 2048, "something odd happened", "soft_bounce"),
])
def test_postmark_bounce_types(bounce_type, code, details, kind):
    (event,) = parsers.postmark(pm_bounce(bounce_type, code, details), read)
    assert (event.kind, event.recipient_id, event.source) == (kind, 7, "postmark")
    assert event.detail["type"] == bounce_type
    assert event.provider_event_id == f"bounce:{4001000000 + code}"


@pytest.mark.parametrize("bounce_type,code", [("Subscribe", 32), ("OpenRelayTest", 1024),
                                              ("InboundError", 100008)])
def test_postmark_bounce_types_about_something_else_are_skipped(bounce_type, code):
    assert parsers.postmark(pm_bounce(bounce_type, code), read) == []


def test_postmark_type_code_alone_is_enough():
    record = pm_bounce("", 4096)
    del record["Type"]
    (event,) = parsers.postmark(record, read)
    assert event.kind == "soft_bounce" and event.detail["type"] == "SoftBounce"


def test_postmark_records():
    delivery = {"RecordType": "Delivery", "ServerID": 8123, "MessageStream": "outbound",
                "MessageID": "0f5e1c9a-3b1d-4d6e-a2c8-7e9b1f2d3c4a", "Recipient": "ada@example.org",
                "Tag": "autumn", "DeliveredAt": ISO,
                "Details": "smtp;250 2.0.0 OK 1700000000 x12si345678wrb.100 - gsmtp",
                "Metadata": {"sb_rid": "tok-7"}}
    opened = {"RecordType": "Open", "MessageStream": "outbound", "FirstOpen": True,
              "Client": {"Name": "Gmail", "Company": "Google", "Family": "Gmail"},
              "OS": {"Name": "Android", "Company": "Google", "Family": "Android"},
              "Platform": "Mobile", "UserAgent": "Mozilla/5.0 (Linux; Android 14) Mobile",
              "ReadSeconds": 12, "Geo": {"CountryISOCode": "FR", "Country": "France"},
              "MessageID": delivery["MessageID"], "Metadata": {"sb_rid": "tok-7"},
              "ReceivedAt": ISO, "Tag": "autumn", "Recipient": "ada@example.org"}
    click = {**opened, "RecordType": "Click", "ClickLocation": "HTML",
             "OriginalLink": "https://shop.example/autumn?utm_source=mail"}
    complaint = {**pm_bounce("SpamComplaint", 100001), "RecordType": "SpamComplaint"}
    events = parsers.postmark([delivery, opened, click, complaint], read)
    assert [e.kind for e in events] == ["delivered", "open", "click", "spam"]
    assert events[2].detail["url"] == "https://shop.example/autumn?utm_source=mail"
    assert events[0].occurred_at == datetime.fromisoformat(ISO[:19] + ".123456+00:00")
    assert not events[1].machine
    assert len({e.provider_event_id for e in events}) == 4


@pytest.mark.parametrize("suppress,reason,origin,kinds", [
    (True, "ManualSuppression", "Recipient", ["unsubscribed"]),
    (True, "HardBounce", "Recipient", []),
    (True, "SpamComplaint", "Recipient", []),
    (True, "ManualSuppression", "Customer", []),
    (False, "ManualSuppression", "Admin", []),
])
def test_postmark_subscription_change(suppress, reason, origin, kinds):
    record = {"RecordType": "SubscriptionChange", "MessageID": "5d2a9c1e-aaaa-bbbb-cccc-0123456789ab",
              "ServerID": 8123, "MessageStream": "outbound", "ChangedAt": ISO,
              "Recipient": "ada@example.org", "Origin": origin, "SuppressSending": suppress,
              "SuppressionReason": reason, "Tag": "autumn", "Metadata": {"sb_rid": "tok-7"}}
    assert [e.kind for e in parsers.postmark(record, read)] == kinds


def test_postmark_recipient_from_the_bounce_dump():
    record = pm_bounce("HardBounce", 1, "smtp;550 5.1.1 user unknown", Metadata={},
                       Content="Return-Path: <>\r\nX-Sendboard-Rid: tok-7\r\nSubject: Autumn\r\n")
    (event,) = parsers.postmark(record, read)
    assert event.recipient_id == 7


@pytest.mark.parametrize("record", [{"RecordType": "Delivery"}, {"Type": "HardBounce"},
                                    {"RecordType": "Open", "ReceivedAt": "yesterday"}])
def test_postmark_malformed(record):
    with pytest.raises(parsers.PayloadError):
        parsers.postmark(record, read)


# ---------------------------------------------------------------- Brevo, parsed


def brevo_event(name: str, **extra):
    ts = int((NOW - timedelta(minutes=5)).timestamp())
    return {"event": name, "email": "ada@example.org", "id": 512345,
            "date": "2026-11-23 11:00:00", "ts": ts,
            "message-id": "<202611231000.41234567890@smtp-relay.mailin.fr>", "ts_event": ts,
            "subject": "Autumn sale", "X-Mailin-custom": "tok-7",
            "sending_ip": "185.41.28.109", "ts_epoch": ts * 1000 + 250, "template_id": 12,
            "tags": ["autumn"], **extra}


@pytest.mark.parametrize("name,extra,kind", [
    ("request", {}, "sent"),
    ("delivered", {}, "delivered"),
    ("deferred", {"reason": "451 4.7.1 greylisted"}, "deferred"),
    ("soft_bounce", {"reason": "452 4.2.2 mailbox full"}, "soft_bounce"),
    ("soft_bounce", {"reason": "421 4.7.0 IP listed at spamhaus.org, blocked"}, "blocked"),
    ("hard_bounce", {"reason": "550 5.1.1 user unknown"}, "hard_bounce"),
    ("hardBounce", {"reason": ""}, "hard_bounce"),
    ("hard_bounce", {"reason": "550 5.7.1 rejected by content filter as spam"}, "blocked"),
    ("invalid_email", {}, "hard_bounce"),
    ("blocked", {"reason": "blocked: contact is blacklisted"}, "dropped"),
    ("error", {"reason": "sender not validated"}, "delivery_error"),
    ("spam", {}, "spam"),
    ("opened", {}, "open"),
    ("unique_opened", {}, "open"),
    ("uniqueOpened", {}, "open"),
    ("click", {"link": "https://shop.example/autumn"}, "click"),
    ("unsubscribed", {}, "unsubscribed"),
])
def test_brevo_events(name, extra, kind):
    (event,) = parsers.brevo(brevo_event(name, **extra), read)
    assert (event.kind, event.recipient_id, event.source) == (kind, 7, "brevo")
    assert event.occurred_at == NOW - timedelta(minutes=5) + timedelta(milliseconds=250)
    if kind == "click":
        assert event.detail["url"] == "https://shop.example/autumn"


def test_brevo_proxy_open_is_a_machine_and_unknown_events_are_skipped():
    (event,) = parsers.brevo(brevo_event("proxy_open"), read)
    assert event.kind == "open" and event.machine
    assert parsers.brevo(brevo_event("list_addition"), read) == []


def test_brevo_opened_and_unique_opened_of_one_open_share_an_id():
    a = parsers.brevo(brevo_event("opened"), read)[0]
    b = parsers.brevo(brevo_event("unique_opened"), read)[0]
    assert a.provider_event_id == b.provider_event_id


def test_brevo_recipient_found_by_json_custom_header_or_our_message_id():
    (event,) = parsers.brevo(brevo_event("delivered", **{
        "X-Mailin-custom": json.dumps({"sb_rid": "tok-7"})}), read)
    assert event.recipient_id == 7
    (event,) = parsers.brevo(brevo_event("delivered", **{
        "X-Mailin-custom": "", "message-id": "<r1.ab@sendboard.local>"}), read)
    assert (event.recipient_id, event.message_id) == (None, "r1.ab@sendboard.local")


@pytest.mark.parametrize("payload", [{"email": "x"}, {"event": "delivered"}, "text", [1]])
def test_brevo_malformed(payload):
    with pytest.raises(parsers.PayloadError):
        parsers.brevo(payload, read)


# ---------------------------------------------------------------- through the endpoints


@pytest.fixture
def rows(app):
    out = make_sent_recipients(2, handed_off_at=NOW - timedelta(hours=1))
    app.config.update(POSTMARK_WEBHOOK_USER="pm-user", POSTMARK_WEBHOOK_PASSWORD="pm-pass",
                      BREVO_WEBHOOK_TOKEN=BREVO_TOKEN)
    return out


def test_postmark_endpoint(client, rows):
    a, b = rows
    bounce = pm_bounce("HardBounce", 1, "smtp;550 5.1.1 user unknown",
                       Metadata={"sb_rid": recipient_token(a.id)})
    resp = client.post("/webhooks/postmark", json=bounce, headers={"Authorization": BASIC})
    assert resp.status_code == 200 and resp.json["applied"] == 1, resp.json
    assert response_of(a) == "hard_bounce"
    assert not db.session.get(Contact, a.contact_id).valid
    again = client.post("/webhooks/postmark", json=bounce, headers={"Authorization": BASIC})
    assert again.json["duplicates"] == 1
    opened = {"RecordType": "Open", "MessageID": "x", "ReceivedAt": ISO, "UserAgent": "Mozilla",
              "Recipient": b.address, "Metadata": {"sb_rid": recipient_token(b.id)}}
    assert client.post("/webhooks/postmark", json=opened,
                       headers={"Authorization": BASIC}).json["applied"] == 1
    assert response_of(b) == "opened"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic " + base64.b64encode(
    b"pm-user:wrong").decode()}, {"Authorization": "Bearer " + BREVO_TOKEN}])
def test_postmark_refuses_without_its_credentials(client, rows, headers):
    record = pm_bounce("HardBounce", 1, Metadata={"sb_rid": recipient_token(rows[0].id)})
    resp = client.post("/webhooks/postmark", json=record, headers=headers)
    assert resp.status_code == 401
    assert db.session.scalar(select(ResponseEvent.id)) is None


def test_postmark_shared_basic_credentials_when_its_own_are_unset(app, client, rows):
    app.config.update(POSTMARK_WEBHOOK_USER="", POSTMARK_WEBHOOK_PASSWORD="",
                      SENDBOARD_WEBHOOK_BASIC_USER="hook", SENDBOARD_WEBHOOK_BASIC_PASSWORD="pw")
    shared = "Basic " + base64.b64encode(b"hook:pw").decode()
    record = {"RecordType": "Delivery", "MessageID": "m", "DeliveredAt": ISO,
              "Metadata": {"sb_rid": recipient_token(rows[0].id)}}
    assert client.post("/webhooks/postmark", json=record,
                       headers={"Authorization": shared}).status_code == 200
    assert client.post("/webhooks/postmark", json=record,
                       headers={"Authorization": BASIC}).status_code == 401


def test_brevo_endpoint(client, rows):
    a, b = rows
    event = brevo_event("spam", **{"X-Mailin-custom": recipient_token(a.id)})
    resp = client.post("/webhooks/brevo", json=event,
                       headers={"Authorization": f"Bearer {BREVO_TOKEN}"})
    assert resp.status_code == 200 and resp.json["applied"] == 1, resp.json
    assert response_of(a) == "spam"
    by_query = brevo_event("delivered", **{"X-Mailin-custom": "",
                                           "message-id": f"<{b.message_id}>"})
    resp = client.post(f"/webhooks/brevo?token={BREVO_TOKEN}", json=by_query)
    assert resp.json["applied"] == 1 and response_of(b) == "delivered"
    opens = [brevo_event(n, **{"X-Mailin-custom": recipient_token(b.id)})
             for n in ("opened", "unique_opened")]
    resp = client.post("/webhooks/brevo", json=opens,
                       headers={"Authorization": f"Bearer {BREVO_TOKEN}"})
    assert resp.json == {"received": 2, "applied": 1, "duplicates": 1, "unmatched": 0}
    assert db.session.get(Recipient, b.id).opens == 1


@pytest.mark.parametrize("how", ["none", "wrong", "basic", "query-wrong"])
def test_brevo_refuses_without_its_token(client, rows, how):
    headers = {"none": {}, "wrong": {"Authorization": "Bearer nope"}, "basic": {
        "Authorization": BASIC}, "query-wrong": {}}[how]
    path = "/webhooks/brevo?token=nope" if how == "query-wrong" else "/webhooks/brevo"
    resp = client.post(path, json=brevo_event("spam", **{
        "X-Mailin-custom": recipient_token(rows[0].id)}), headers=headers)
    assert resp.status_code == 401
    assert db.session.scalar(select(ResponseEvent.id)) is None


def test_brevo_without_a_configured_token_refuses_everything(app, client, rows):
    app.config["BREVO_WEBHOOK_TOKEN"] = ""
    resp = client.post("/webhooks/brevo", json=brevo_event("spam"),
                       headers={"Authorization": "Bearer "})
    assert resp.status_code == 401


def test_time_is_recent():  # the samples above are dated minutes ago, inside the accepted range
    assert abs(time.time() - NOW.timestamp()) < 3600

"""Webhooks: authentication (401), malformed payloads (400, nothing applied) and event mapping."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, ResponseEvent
from app.services import totals
from app.services.tokens import recipient_token
from app.webhooks.auth import generic_signature, sns_string_to_sign

SECRET = "generic-secret"
MAILGUN_KEY = "key-mailgun-signing"


@pytest.fixture
def rows(app):
    mailing = Mailing(name="Autumn", status="sent")
    db.session.add(mailing)
    db.session.flush()
    out = []
    for i in range(3):
        contact = Contact(email=f"p{i}@example.org", email_key=f"p{i}@example.org")
        db.session.add(contact)
        db.session.flush()
        out.append(Recipient(mailing_id=mailing.id, contact_id=contact.id, address=contact.email,
                             response=Response.SENT.value, message_id=f"r{i}.ab@sendboard.local",
                             handed_off_at=datetime.now(UTC) - timedelta(hours=1)))
    db.session.add_all(out)
    db.session.commit()
    totals.bump(mailing.id, {"response:sent": 3})
    db.session.commit()
    app.config.update(GENERIC_WEBHOOK_SECRET=SECRET, MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
                      SENDBOARD_WEBHOOK_BASIC_USER="hook", SENDBOARD_WEBHOOK_BASIC_PASSWORD="pw")
    return out


def event_count() -> int:
    return db.session.scalar(select(func.count()).select_from(ResponseEvent))


def response_of(r: Recipient) -> str:
    db.session.expire_all()
    return db.session.get(Recipient, r.id).response


# ---------------------------------------------------------------- generic


def post_generic(client, payload, *, secret=SECRET, timestamp=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return client.post("/webhooks/generic", data=body, content_type="application/json",
                       headers={"X-Sendboard-Timestamp": ts,
                                "X-Sendboard-Signature": generic_signature(secret, ts, body)})


def test_generic_applies_a_batch(client, rows):
    a, b, c = rows
    now = int(time.time())
    resp = post_generic(client, {"events": [
        {"event": "delivered", "timestamp": now, "rid": recipient_token(a.id), "id": "1"},
        {"event": "bounce", "timestamp": now, "message_id": f"<{b.message_id}>",
         "status": "5.1.1", "diagnostic": "550 5.1.1 no such user", "id": "2"},
        {"event": "complaint", "timestamp": "2026-11-23T10:00:00Z", "rid": recipient_token(c.id),
         "id": "3"},
        {"event": "open", "timestamp": now, "message_id": "nobody@x", "id": "4"},
    ]})
    assert resp.status_code == 200, resp.json
    assert resp.json == {"received": 4, "applied": 3, "duplicates": 0, "unmatched": 1}
    assert [response_of(r) for r in rows] == ["delivered", "hard_bounce", "spam"]
    again = post_generic(client, [{"event": "delivered", "timestamp": now,
                                   "rid": recipient_token(a.id), "id": "1"}])
    assert again.json["duplicates"] == 1


@pytest.mark.parametrize("change", ["secret", "stale", "missing"])
def test_generic_refuses_unauthenticated(client, rows, change):
    payload = [{"event": "delivered", "timestamp": 1, "rid": recipient_token(rows[0].id)}]
    if change == "secret":
        resp = post_generic(client, payload, secret="wrong")
    elif change == "stale":
        resp = post_generic(client, payload, timestamp=int(time.time()) - 3600)
    else:
        resp = client.post("/webhooks/generic", json=payload)
    assert resp.status_code == 401 and resp.json["error"] == "unauthorized"
    assert event_count() == 0


@pytest.mark.parametrize("payload", [
    [{"event": "delivered", "timestamp": 1, "rid": "x"}, {"event": "teleported", "timestamp": 1,
                                                          "rid": "x"}],
    [{"event": "delivered", "rid": "x"}],
    [{"event": "delivered", "timestamp": "yesterday", "rid": "x"}],
    [{"event": "delivered", "timestamp": "2026-11-23T10:00:00", "rid": "x"}],
    [{"event": "delivered", "timestamp": 1}],
    [{"event": "open", "timestamp": 1, "rid": "x", "machine": "yes"}],
    [{"event": "open", "timestamp": 1, "rid": "x", "id": ""}],
    ["not an object"],
    {"events": "nope"},
    [{"event": "planned", "timestamp": 1, "rid": "x"}],
])
def test_generic_malformed_applies_nothing(client, rows, payload):
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        for item in payload:
            if "rid" in item:
                item["rid"] = recipient_token(rows[0].id)
    resp = post_generic(client, payload)
    assert resp.status_code == 400 and resp.json["error"] == "malformed", resp.json
    assert event_count() == 0 and response_of(rows[0]) == "sent"


def test_generic_not_json_is_400(client, rows):
    assert post_generic(client, None, raw=b"\xff{").status_code == 400


# ---------------------------------------------------------------- SendGrid


@pytest.fixture
def sendgrid_key(app):
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] = base64.b64encode(der).decode()
    return private


def post_sendgrid(client, events, key, *, tamper=False, timestamp=None):
    body = json.dumps(events).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    if tamper:
        body = body.replace(b"delivered", b"bounce\x20\x20\x20")
    return client.post("/webhooks/sendgrid", data=body, content_type="application/json",
                       headers={"X-Twilio-Email-Event-Webhook-Signature":
                                base64.b64encode(sig).decode(),
                                "X-Twilio-Email-Event-Webhook-Timestamp": ts})


def sendgrid_events(rows):
    a, b, c = rows
    now = int(time.time())
    return [
        {"email": a.address, "timestamp": now, "event": "processed", "sg_event_id": "e1",
         "smtp-id": f"<{a.message_id}>", "sb_rid": recipient_token(a.id)},
        {"email": a.address, "timestamp": now, "event": "delivered", "sg_event_id": "e2",
         "smtp-id": f"<{a.message_id}>", "response": "250 OK"},
        {"email": a.address, "timestamp": now, "event": "open", "sg_event_id": "e3",
         "sg_machine_open": True, "sb_rid": recipient_token(a.id)},
        {"email": b.address, "timestamp": now, "event": "bounce", "type": "bounce",
         "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist",
         "sg_event_id": "e4", "sb_rid": recipient_token(b.id)},
        {"email": c.address, "timestamp": now, "event": "bounce", "type": "blocked",
         "status": "5.7.1", "reason": "blocked by policy", "sg_event_id": "e5",
         "unique_args": {"sb_rid": recipient_token(c.id)}},
        {"email": c.address, "timestamp": now, "event": "group_unsubscribe",
         "asm_group_id": 7, "sg_event_id": "e6", "sb_rid": recipient_token(c.id)},
        {"email": c.address, "timestamp": now, "event": "future_event_type",
         "sg_event_id": "e7"},
    ]


def test_sendgrid_signed_batch(client, rows, sendgrid_key):
    resp = post_sendgrid(client, sendgrid_events(rows), sendgrid_key)
    assert resp.status_code == 200, resp.json
    assert resp.json["received"] == 6
    a, b, c = rows
    assert [response_of(r) for r in rows] == ["delivered", "hard_bounce", "blocked"]
    db.session.expire_all()
    assert db.session.get(Recipient, a.id).machine_opens == 1
    # The group unsubscribe still reaches the contact, though the response is final.
    assert db.session.get(Contact, c.contact_id).do_not_email


def test_sendgrid_bad_signature_and_stale(client, rows, sendgrid_key):
    assert post_sendgrid(client, sendgrid_events(rows), sendgrid_key,
                         tamper=True).status_code == 401
    other = ec.generate_private_key(ec.SECP256R1())
    assert post_sendgrid(client, sendgrid_events(rows), other).status_code == 401
    assert post_sendgrid(client, sendgrid_events(rows), sendgrid_key,
                         timestamp=int(time.time()) - 3600).status_code == 401
    assert client.post("/webhooks/sendgrid", json=[]).status_code == 401
    assert event_count() == 0


def test_sendgrid_basic_auth(client, rows):
    cred = base64.b64encode(b"hook:pw").decode()
    resp = client.post("/webhooks/sendgrid", json=sendgrid_events(rows)[:2],
                       headers={"Authorization": f"Basic {cred}"})
    assert resp.status_code == 200 and resp.json["applied"] == 1
    bad = base64.b64encode(b"hook:nope").decode()
    assert client.post("/webhooks/sendgrid", json=[],
                       headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_sendgrid_malformed(client, rows, sendgrid_key):
    events = sendgrid_events(rows)
    events[3]["timestamp"] = None
    resp = post_sendgrid(client, events, sendgrid_key)
    assert resp.status_code == 400 and "event 3" in resp.json["reason"]
    assert post_sendgrid(client, {"event": "open"}, sendgrid_key).status_code == 400
    assert event_count() == 0


# ---------------------------------------------------------------- Mailgun


def mailgun_body(data, *, key=MAILGUN_KEY, token=None, timestamp=None):
    ts = str(int(time.time()) if timestamp is None else timestamp)
    token = token or hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:50]
    sig = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": ts, "token": token, "signature": sig}, "event-data": data}


def test_mailgun_events_and_replay(client, rows, redis_conn):
    a, b, _ = rows
    failed = {"event": "failed", "severity": "permanent", "id": "mg1",
              "timestamp": time.time(), "reason": "bounce",
              "delivery-status": {"code": 550, "message": "5.1.1 user unknown",
                                  "description": ""},
              "message": {"headers": {"message-id": b.message_id}}}
    body = mailgun_body(failed)
    assert client.post("/webhooks/mailgun", json=body).status_code == 200
    assert response_of(b) == "hard_bounce"
    replay = client.post("/webhooks/mailgun", json=body)
    assert replay.status_code == 401 and replay.json["reason"] == "replayed token"
    opened = {"event": "opened", "id": "mg2", "timestamp": time.time(),
              "user-variables": {"sb_rid": recipient_token(a.id)},
              "client-info": {"bot": "apple"}}
    assert client.post("/webhooks/mailgun", json=mailgun_body(opened)).status_code == 200
    db.session.expire_all()
    assert db.session.get(Recipient, a.id).machine_opens == 1


def test_mailgun_refusals(client, rows, redis_conn):
    data = {"event": "delivered", "id": "x", "timestamp": time.time()}
    assert client.post("/webhooks/mailgun",
                       json=mailgun_body(data, key="wrong")).status_code == 401
    assert client.post("/webhooks/mailgun",
                       json=mailgun_body(data, timestamp=time.time() - 600)).status_code == 401
    assert client.post("/webhooks/mailgun", data=b"nope").status_code == 401
    bad = mailgun_body({"event": "delivered", "timestamp": "soon"})
    assert client.post("/webhooks/mailgun", json=bad).status_code == 400
    assert event_count() == 0


# ---------------------------------------------------------------- SES via SNS


@pytest.fixture
def sns_signer(app):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    app.config["SES_SNS_CERT_PEM"] = cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(message, version="1"):
        message = {**message, "SignatureVersion": version}
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        sig = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {**message, "Signature": base64.b64encode(sig).decode()}

    return sign


def sns_notification(inner, message_id="sns-1"):
    return {"Type": "Notification", "MessageId": message_id,
            "TopicArn": "arn:aws:sns:eu-west-1:123:ses", "Message": json.dumps(inner),
            "Timestamp": "2026-11-23T10:00:00.000Z"}


def ses_mail(r):
    return {"timestamp": "2026-11-23T10:00:00.000Z", "messageId": "0102-ses",
            "headers": [{"name": "X-Sendboard-Rid", "value": recipient_token(r.id)}],
            "commonHeaders": {"messageId": "<0102-ses@email.amazonses.com>"}}


@pytest.mark.parametrize(("bounce_type", "status", "diagnostic", "expected"), [
    ("Permanent", "5.1.1", "smtp; 550 5.1.1 user unknown", "hard_bounce"),
    # Permanent for the message, not for the address: the contact stays valid.
    ("Permanent", "5.1.1", "smtp; 550 blocked", "blocked"),
    ("Permanent", "", "", "hard_bounce"),
    ("Transient", "4.2.2", "smtp; 550 blocked", "soft_bounce"),
    ("Undetermined", "5.7.1", "smtp; 550 blocked", "blocked"),
])
def test_ses_bounces(client, rows, sns_signer, bounce_type, status, diagnostic, expected):
    r = rows[0]
    inner = {"notificationType": "Bounce", "mail": ses_mail(r),
             "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                        "timestamp": "2026-11-23T10:01:00.000Z",
                        "bouncedRecipients": [{"emailAddress": r.address, "status": status,
                                               "diagnosticCode": diagnostic}]}}
    resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(inner), "2"))
    assert resp.status_code == 200, resp.json
    assert response_of(r) == expected


def test_ses_event_types_by_message_id(client, rows, sns_signer):
    a, b, c = rows
    mail = {"timestamp": "2026-11-23T10:00:00.000Z",
            "commonHeaders": {"messageId": f"<{a.message_id}>"}}
    for i, (name, section) in enumerate([
        ("Send", {}), ("Delivery", {"timestamp": "2026-11-23T10:00:05Z"}),
        ("DeliveryDelay", {"delayType": "MailboxFull"}),
        ("Open", {"userAgent": "Mozilla/5.0 (Macintosh) AppleWebKit", "timestamp":
                  "2026-11-23T11:00:00Z"}),
        ("Click", {"link": "https://example.org", "timestamp": "2026-11-23T11:01:00Z"}),
    ]):
        key = name[:1].lower() + name[1:]
        inner = {"eventType": name, "mail": mail, key: section}
        resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(inner, f"m{i}")))
        assert resp.status_code == 200, (name, resp.json)
    assert response_of(a) == "clicked"
    complaint = {"notificationType": "Complaint", "mail": ses_mail(b),
                 "complaint": {"complaintFeedbackType": "abuse"}}
    client.post("/webhooks/ses", json=sns_signer(sns_notification(complaint, "m9")))
    assert response_of(b) == "spam"
    reject = {"eventType": "Reject", "mail": ses_mail(c), "reject": {"reason": "Bad content"}}
    client.post("/webhooks/ses", json=sns_signer(sns_notification(reject, "m10")))
    assert response_of(c) == "dropped"


def test_ses_subscription_is_logged_not_fetched(client, rows, sns_signer, caplog):
    msg = {"Type": "SubscriptionConfirmation", "MessageId": "s1", "Token": "tok",
           "TopicArn": "arn:aws:sns:eu-west-1:123:ses", "Message": "confirm",
           "SubscribeURL": "https://sns.example/confirm?t=1",
           "Timestamp": "2026-11-23T10:00:00.000Z"}
    resp = client.post("/webhooks/ses", json=sns_signer(msg))
    assert resp.status_code == 200 and "sns.example/confirm" in caplog.text


def test_ses_refusals(client, rows, sns_signer):
    inner = {"notificationType": "Delivery", "mail": ses_mail(rows[0]), "delivery": {}}
    signed = sns_signer(sns_notification(inner))
    forged = {**signed, "Message": signed["Message"].replace("Delivery", "Bounce")}
    assert client.post("/webhooks/ses", json=forged).status_code == 401
    assert client.post("/webhooks/ses", json={**signed, "Signature": "@@"}).status_code == 401
    bad_inner = sns_signer(sns_notification({"notificationType": "Bounce",
                                             "mail": ses_mail(rows[0]), "bounce": {}}))
    assert client.post("/webhooks/ses", json=bad_inner).status_code == 400
    assert event_count() == 0


def test_ses_basic_auth_without_certificate(client, rows):
    cred = base64.b64encode(b"hook:pw").decode()
    inner = {"notificationType": "Delivery", "mail": ses_mail(rows[0]), "delivery": {}}
    assert client.post("/webhooks/ses", json=sns_notification(inner)).status_code == 401
    resp = client.post("/webhooks/ses", json=sns_notification(inner),
                       headers={"Authorization": f"Basic {cred}"})
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"

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

from app.extensions import db
from app.models import Contact, Recipient, ResponseEvent
from app.services.tokens import recipient_token
from app.webhooks.auth import generic_signature, sns_string_to_sign
from tests.factories import make_sent_recipients, response_of

SECRET = "generic-secret"
MAILGUN_KEY = "key-mailgun-signing"


@pytest.fixture
def rows(app):
    out = make_sent_recipients(3)
    app.config.update(GENERIC_WEBHOOK_SECRET=SECRET, MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
                      SENDBOARD_WEBHOOK_BASIC_USER="hook", SENDBOARD_WEBHOOK_BASIC_PASSWORD="pw")
    return out


def event_count() -> int:
    return db.session.scalar(select(func.count()).select_from(ResponseEvent))


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


NOW = int(time.time())


@pytest.mark.parametrize("payload", [
    [{"event": "delivered", "timestamp": NOW, "rid": "x"},
     {"event": "teleported", "timestamp": NOW, "rid": "x"}],
    [{"event": "delivered", "rid": "x"}],
    [{"event": "delivered", "timestamp": "yesterday", "rid": "x"}],
    [{"event": "delivered", "timestamp": "2026-11-23T10:00:00", "rid": "x"}],
    [{"event": "delivered", "timestamp": NOW}],
    [{"event": "open", "timestamp": NOW, "rid": "x", "machine": "yes"}],
    [{"event": "open", "timestamp": NOW, "rid": "x", "id": ""}],
    ["not an object"],
    {"events": "nope"},
    [{"event": "planned", "timestamp": NOW, "rid": "x"}],
    # Times no provider means: before 2000, days ahead, past any calendar, NaN, huge numbers.
    [{"event": "delivered", "timestamp": 1, "rid": "x"}],
    [{"event": "delivered", "timestamp": NOW + 3 * 86400, "rid": "x"}],
    [{"event": "delivered", "timestamp": 10**30, "rid": "x"}],
    [{"event": "delivered", "timestamp": "0001-01-01T00:00:00+05:00", "rid": "x"}],
    [{"event": "delivered", "timestamp": "9999-12-31T23:59:59-05:00", "rid": "x"}],
    [{"event": "delivered", "timestamp": 1e300, "rid": "x"}],
])
def test_generic_malformed_applies_nothing(client, rows, payload):
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        for item in payload:
            if "rid" in item:
                item["rid"] = recipient_token(rows[0].id)
    resp = post_generic(client, payload)
    assert resp.status_code == 400 and resp.json["error"] == "malformed", resp.json
    assert event_count() == 0 and response_of(rows[0]) == "sent"


@pytest.mark.parametrize("raw", [
    b"\xff{", b"[" * 100_000 + b"]" * 100_000, b'{"events": ' * 5000 + b"[]" + b"}" * 5000,
    b'[{"event": "delivered", "timestamp": ' + b"9" * 5000 + b', "rid": "x"}]',
    b'[{"event": "delivered", "timestamp": 1e400, "rid": "x"}]',
    b'[{"event": "delivered", "timestamp": NaN, "rid": "x"}]',
    b'[{"event": "delivered", "timestamp": -Infinity, "rid": "x"}]',
    b'[{"event": "delivered", "timestamp": 1795430400, "rid": "x"}', b"", b"null", b"1",
])
def test_generic_unreadable_bodies_are_400(client, rows, raw, caplog):
    resp = post_generic(client, None, raw=raw)
    assert resp.status_code == 400 and resp.json["error"] == "malformed", resp.json
    assert "webhook generic malformed (400)" in caplog.text
    assert event_count() == 0


def test_generic_surrogates_are_stored_replaced(client, rows):
    """Lone surrogates (valid JSON escapes, invalid text) are replaced before the write; a token
    carrying one is simply not ours."""
    now = int(time.time())
    token = recipient_token(rows[0].id)
    raw = ('[{"event": "bounce", "timestamp": NOW, "rid": "TOKEN", "id": "s1", "status": "5.1.1",'
           ' "diagnostic": "550 user unknown \\ud800 here\\u0000"},'
           ' {"event": "open", "timestamp": NOW, "rid": "TOKEN\\udfff", "id": "s2"},'
           ' {"event": "open", "timestamp": NOW, "message_id": "\\ud83d<x@y>", "id": "s3"}]'
           ).replace("NOW", str(now)).replace("TOKEN", token).encode()
    resp = post_generic(client, None, raw=raw)
    assert resp.status_code == 200, resp.json
    assert resp.json == {"received": 3, "applied": 1, "duplicates": 0, "unmatched": 2}
    stored = db.session.scalars(select(ResponseEvent)).one()
    assert stored.detail["diagnostic"] == "550 user unknown \ufffd here"
    assert response_of(rows[0]) == "hard_bounce"


@pytest.mark.parametrize("headers", [
    {"X-Sendboard-Timestamp": "1795430400", "X-Sendboard-Signature": "sha256=\u00e9" * 30},
    {"X-Sendboard-Timestamp": "\u00e9\u00e9", "X-Sendboard-Signature": "sha256=00"},
    {"X-Sendboard-Timestamp": "9" * 5000, "X-Sendboard-Signature": "sha256=00"},
    {"X-Sendboard-Timestamp": "1e400", "X-Sendboard-Signature": "x" * 100_000},
    {"X-Sendboard-Timestamp": "nan", "X-Sendboard-Signature": "sha256=00"},
])
def test_generic_absurd_signature_headers_are_401(client, rows, headers):
    resp = client.post("/webhooks/generic", data=b"[]", content_type="application/json",
                       headers=headers)
    assert resp.status_code == 401 and resp.json["error"] == "unauthorized"


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

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


def sns_now(offset: float = 0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
    app.config["SES_SNS_TOPIC_ARNS"] = f" {TOPIC} , arn:aws:sns:us-east-1:123456789012:other"

    def sign(message, version="1"):
        message = {**message, "SignatureVersion": version}
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        sig = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {**message, "Signature": base64.b64encode(sig).decode()}

    return sign


def sns_notification(inner, message_id="sns-1", *, timestamp=None, topic=TOPIC):
    return {"Type": "Notification", "MessageId": message_id,
            "TopicArn": topic, "Message": json.dumps(inner),
            "Timestamp": timestamp or sns_now()}


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


def delivery(r):
    return {"notificationType": "Delivery", "mail": ses_mail(r), "delivery": {}}


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(("offset", "accepted"), [
    (-3540, True), (240, True),  # 59 minutes old; 4 minutes ahead (clock drift)
    (-3660, False), (-5 * 365 * 86400, False), (600, False),
])
def test_ses_message_age(client, rows, sns_signer, version, offset, accepted):
    """A validly signed message is refused when its Timestamp is over an hour old (SNS stops
    retrying by then: it is a replay) or more than a few minutes ahead."""
    signed = sns_signer(sns_notification(delivery(rows[0]), timestamp=sns_now(offset)), version)
    resp = client.post("/webhooks/ses", json=signed)
    if accepted:
        assert resp.status_code == 200 and response_of(rows[0]) == "delivered"
    else:
        assert resp.status_code == 401 and "SNS message" in resp.json["reason"]
        assert event_count() == 0 and response_of(rows[0]) == "sent"


@pytest.mark.parametrize("timestamp", ["", "yesterday", "2026-11-23T10:00:00", "9" * 500,
                                       "0001-01-01T00:00:00+14:00"])
def test_ses_message_without_a_valid_timestamp(client, rows, sns_signer, timestamp):
    signed = sns_signer({**sns_notification(delivery(rows[0])), "Timestamp": timestamp})
    resp = client.post("/webhooks/ses", json=signed)
    assert resp.status_code == 401 and "Timestamp" in resp.json["reason"]
    assert event_count() == 0


def test_ses_topic_allow_list(app, client, rows, sns_signer, caplog):
    other = "arn:aws:sns:eu-west-1:999999999999:ses-events"  # another account's topic
    resp = client.post("/webhooks/ses", json=sns_signer(
        sns_notification(delivery(rows[0]), topic=other), "2"))
    assert resp.status_code == 401 and resp.json["reason"] == "SNS topic not allowed"
    assert event_count() == 0
    app.config["SES_SNS_TOPIC_ARNS"] = ""
    resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(delivery(rows[0]))))
    assert resp.status_code == 401 and "SES_SNS_TOPIC_ARNS is empty" in resp.json["reason"]
    assert "SES_SNS_TOPIC_ARNS is empty" in caplog.text
    assert event_count() == 0
    app.config["SES_SNS_TOPIC_ARNS"] = TOPIC
    resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(delivery(rows[0]))))
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


def test_ses_topic_allow_list_from_the_environment(app, client, rows, sns_signer, monkeypatch):
    app.config["SES_SNS_TOPIC_ARNS"] = ""
    monkeypatch.setenv("SES_SNS_TOPIC_ARNS", f"arn:aws:sns:us-east-1:1:x,{TOPIC}")
    resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(delivery(rows[0]))))
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


def subscription(kind="SubscriptionConfirmation", *, url=None, topic=TOPIC):
    return {"Type": kind, "MessageId": "s1", "Token": "2336412f37fb687f5d51e6e2425",
            "TopicArn": topic, "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": url or ("https://sns.eu-west-1.amazonaws.com/?Action="
                                    "ConfirmSubscription&TopicArn=" + topic + "&Token=2336"),
            "Timestamp": sns_now()}


@pytest.fixture
def fetched(app):
    calls = []

    def fetch(url):
        calls.append(url)
        return True

    app.extensions["sendboard.sns_subscribe_fetcher"] = fetch
    return calls


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_subscription_is_confirmed(client, rows, sns_signer, fetched, version):
    msg = subscription()
    resp = client.post("/webhooks/ses", json=sns_signer(msg, version))
    assert resp.status_code == 200 and resp.json == {"subscription": "confirmed"}
    assert fetched == [msg["SubscribeURL"]]
    assert event_count() == 0


@pytest.mark.parametrize("url", [
    "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",  # not the topic's region
    "https://sns.eu-west-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    "https://evil.example/?sns.eu-west-1.amazonaws.com",
    "https://user@sns.eu-west-1.amazonaws.com/",
    "https://sns.eu-west-1.amazonaws.com:8443/",
    "https://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "https://sns.eu-west-1.amazonaws.com\u00e9/",
])
def test_ses_subscription_never_fetches_other_urls(client, rows, sns_signer, fetched, url):
    resp = client.post("/webhooks/ses", json=sns_signer(subscription(url=url)))
    assert resp.status_code == 400 and "SubscribeURL" in resp.json["reason"]
    assert fetched == []


def test_ses_subscription_must_be_signed_and_allowed(client, rows, sns_signer, fetched):
    signed = sns_signer(subscription())
    forged = {**signed, "SubscribeURL": signed["SubscribeURL"] + "&x=1"}
    assert client.post("/webhooks/ses", json=forged).status_code == 401
    assert client.post("/webhooks/ses", json=subscription()).status_code == 401
    other = "arn:aws:sns:eu-west-1:999999999999:ses-events"
    resp = client.post("/webhooks/ses", json=sns_signer(subscription(topic=other)))
    assert resp.status_code == 401 and resp.json["reason"] == "SNS topic not allowed"
    old = sns_signer({**subscription(), "Timestamp": sns_now(-7200)})
    assert client.post("/webhooks/ses", json=old).status_code == 401
    assert fetched == []


def test_ses_subscription_that_cannot_be_confirmed(app, client, rows, sns_signer, caplog):
    def fail(url):
        raise OSError("network unreachable")

    app.extensions["sendboard.sns_subscribe_fetcher"] = fail
    resp = client.post("/webhooks/ses", json=sns_signer(subscription()))
    assert resp.status_code == 200 and resp.json == {"subscription": "not confirmed"}
    assert "not confirmed; visit https://sns.eu-west-1.amazonaws.com/" in caplog.text


def test_ses_unsubscribe_is_acknowledged(client, rows, sns_signer, fetched):
    msg = subscription("UnsubscribeConfirmation")
    resp = client.post("/webhooks/ses", json=sns_signer(msg, "2"))
    assert resp.status_code == 200 and resp.json == {"unsubscribe": "acknowledged"}
    assert fetched == [] and event_count() == 0


def test_ses_subject_is_signed_when_given(client, rows, sns_signer):
    with_subject = sns_signer({**sns_notification(delivery(rows[0])), "Subject": "Amazon SES"})
    resp = client.post("/webhooks/ses", json={**with_subject, "Subject": "Changed"})
    assert resp.status_code == 401 and event_count() == 0
    # A null Subject is no Subject (left out of the signed text), as SNS sends it.
    null_subject = sns_signer({**sns_notification(delivery(rows[0])), "Subject": None}, "2")
    resp = client.post("/webhooks/ses", json=null_subject)
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


def test_ses_refusals(client, rows, sns_signer):
    inner = {"notificationType": "Delivery", "mail": ses_mail(rows[0]), "delivery": {}}
    signed = sns_signer(sns_notification(inner))
    forged = {**signed, "Message": signed["Message"].replace("Delivery", "Bounce")}
    assert client.post("/webhooks/ses", json=forged).status_code == 401
    assert client.post("/webhooks/ses", json={**signed, "Signature": "@@"}).status_code == 401
    for version in ("3", "", "1.0", 1):
        resp = client.post("/webhooks/ses", json={**signed, "SignatureVersion": version})
        assert resp.status_code == 401
    # SignatureVersion is not signed: a v1 signature relabelled as v2 does not verify.
    assert client.post("/webhooks/ses",
                       json={**signed, "SignatureVersion": "2"}).status_code == 401
    bad_inner = sns_signer(sns_notification({"notificationType": "Bounce",
                                             "mail": ses_mail(rows[0]), "bounce": {}}))
    assert client.post("/webhooks/ses", json=bad_inner).status_code == 400
    assert event_count() == 0


@pytest.mark.parametrize("raw", [
    b"[" * 100_000, b'{"Type": ' * 5000 + b"1" + b"}" * 5000, b"9" * 5000, b"NaN", b"\xff",
    b'{"Type": "Notification", "Message": {"x": 1}}', b'{"Type": "Teleport"}',
])
def test_ses_unreadable_bodies_before_authentication(client, rows, sns_signer, raw):
    resp = client.post("/webhooks/ses", data=raw, content_type="application/json")
    assert resp.status_code == 401 and resp.json["reason"].startswith("unsigned")


@pytest.mark.parametrize("headers", [
    "not a list", 7, {"name": "X-Sendboard-Rid"}, [1, None, ["x"], {"name": 3}], None,
])
def test_ses_headers_of_any_shape(client, rows, sns_signer, headers):
    mail = {**ses_mail(rows[0]), "headers": headers,
            "commonHeaders": {"messageId": f"<{rows[0].message_id}>"}}
    inner = {"notificationType": "Delivery", "mail": mail, "delivery": {}}
    resp = client.post("/webhooks/ses", json=sns_signer(sns_notification(inner)))
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


@pytest.mark.parametrize("inner", [
    "[" * 50_000, "{}", '{"notificationType": "Bounce", "mail": {"timestamp": 1e999}}',
    '{"notificationType": "Delivery", "mail": {"timestamp": ' + "1" * 4400 + "}}",
])
def test_ses_unreadable_notifications_are_400(client, rows, sns_signer, inner):
    signed = sns_signer({**sns_notification({}), "Message": inner})
    resp = client.post("/webhooks/ses", data=json.dumps(signed).encode(),
                       content_type="application/json")
    assert resp.status_code == 400 and resp.json["error"] == "malformed"
    assert event_count() == 0


def test_ses_basic_auth_without_certificate(client, rows):
    cred = base64.b64encode(b"hook:pw").decode()
    inner = {"notificationType": "Delivery", "mail": ses_mail(rows[0]), "delivery": {}}
    assert client.post("/webhooks/ses", json=sns_notification(inner)).status_code == 401
    stale = sns_notification(inner, timestamp=sns_now(-7200))
    assert client.post("/webhooks/ses", json=stale,
                       headers={"Authorization": f"Basic {cred}"}).status_code == 401
    resp = client.post("/webhooks/ses", json=sns_notification(inner),
                       headers={"Authorization": f"Basic {cred}"})
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


def test_ses_basic_auth_keeps_to_the_allow_list_when_set(app, client, rows):
    cred = {"Authorization": "Basic " + base64.b64encode(b"hook:pw").decode()}
    app.config["SES_SNS_TOPIC_ARNS"] = "arn:aws:sns:eu-west-1:1:only-this"
    resp = client.post("/webhooks/ses", json=sns_notification(delivery(rows[0])), headers=cred)
    assert resp.status_code == 401 and resp.json["reason"] == "SNS topic not allowed"
    assert response_of(rows[0]) == "sent"


# ---------------------------------------------------------------- body size


LIMIT = 10 * 1024 * 1024


@pytest.mark.parametrize("endpoint", ["sendgrid", "mailgun", "ses", "generic"])
def test_bodies_over_10_mb_are_413_before_anything_is_read(app, client, rows, endpoint):
    resp = client.post(f"/webhooks/{endpoint}", data=b"[" + b" " * LIMIT + b"]",
                       content_type="application/json")
    assert resp.status_code == 413 and resp.json == {"error": "too large", "limit": LIMIT}
    # The app-wide limit (the CSV import's) is left as it is.
    assert app.config["MAX_CONTENT_LENGTH"] == 200 * 1024 * 1024


@pytest.mark.parametrize("endpoint", ["sendgrid", "mailgun", "ses", "generic"])
def test_bodies_without_a_length_are_cut_at_10_mb(client, rows, endpoint):
    """A chunked body (no Content-Length, the server ends the stream) is refused while read."""
    import io

    resp = client.post(f"/webhooks/{endpoint}", input_stream=io.BytesIO(b" " * (LIMIT + 1)),
                       content_type="application/json",
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413 and resp.json["error"] == "too large"


def test_a_body_of_10_mb_is_read(client, rows):
    body = json.dumps([{"event": "delivered", "timestamp": int(time.time()),
                        "rid": recipient_token(rows[0].id), "pad": "x" * (LIMIT - 200)}])
    assert len(body) <= LIMIT
    resp = post_generic(client, None, raw=body.encode())
    assert resp.status_code == 200 and response_of(rows[0]) == "delivered"


@pytest.mark.parametrize(("length", "status"), [
    ("10", 400),  # the client hung up before sending all it announced
    ("abc", 401), ("-5", 401), ("2", 401),  # unreadable or short: the signature does not match
    ("99999999999999999999999", 413),
])
def test_a_content_length_that_lies(client, rows, length, status):
    ts = str(int(time.time()))
    headers = {"X-Sendboard-Timestamp": ts,
               "X-Sendboard-Signature": generic_signature(SECRET, ts, b"abc")}
    resp = client.post("/webhooks/generic", data=b"abc", content_type="application/json",
                       headers=headers, environ_overrides={"CONTENT_LENGTH": length})
    assert resp.status_code == status and resp.mimetype == "application/json"
    assert event_count() == 0

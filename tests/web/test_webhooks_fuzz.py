"""Every provider webhook, fuzzed: arbitrary bytes, arbitrary JSON (nested deeply, huge integers,
1e400, NaN, lone surrogates, wrong types at every level) and arbitrary headers, with and without
valid authentication, so the parsers themselves are fuzzed past the signature checks.

Whatever is posted, the answer is never 5xx and always JSON, and a refused request (4xx) leaves
every row and counter as it was. Each test also checks that its examples reached every outcome
(events recorded, malformed, unauthorized), so the fuzzing is known to get past authentication;
one explicit example per endpoint makes sure a valid request is among them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.domain.responses import Response
from app.extensions import db
from app.models import Contact, Mailing, Recipient, ResponseEvent
from app.services import totals
from app.services.tokens import recipient_token
from app.webhooks.auth import generic_signature, sns_string_to_sign

SECRET_KEY = "test-secret-key"  # TestConfig's
GENERIC_SECRET = "generic-secret"
MAILGUN_KEY = "key-mailgun-signing"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
BASIC = "Basic " + base64.b64encode(b"hook:pw").decode()
RAW = "@@raw@@"  # a JSON string replaced, after encoding, by a fragment json.dumps cannot write

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# ---------------------------------------------------------------- strategies

NOW = int(time.time())
# Recipient ids 1 to 3 (the `world` fixture checks it), plus an id that is nobody.
TOKENS = [recipient_token(i, secret=SECRET_KEY) for i in (1, 2, 3, 99)]
MESSAGE_IDS = ["<r0.ab@sendboard.local>", "r1.ab@sendboard.local", "nobody@x"]

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=24)
HUGE_INTS = st.one_of(st.integers(), st.integers(min_value=10**15, max_value=10**80),
                      st.sampled_from([2**63, -(2**63) - 1, 10**4000, -(10**300)]))
SCALARS = st.one_of(st.none(), st.booleans(), HUGE_INTS, st.floats(), TEXT, st.just(RAW))
ANY_JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16)
RAW_FRAGMENTS = st.one_of(
    st.integers(1, 60_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 30_000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
    st.integers(4290, 4400).map(lambda n: "9" * n),
    st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
                     '"\\ud800"', '"x\\udfff\\u0000"', '"\\ud83d\\ude00"', "[" * 5000, "0" * 20]),
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), max_size=40)
HEADER_NAMES = st.sampled_from([
    "X-Sendboard-Timestamp", "X-Sendboard-Signature", "X-Twilio-Email-Event-Webhook-Signature",
    "X-Twilio-Email-Event-Webhook-Timestamp", "Authorization", "Content-Type",
    "X-Amz-Sns-Message-Type", "X-Anything",
])
HEADER_VALUES = st.one_of(
    HEADER_TEXT,
    HEADER_TEXT.map(lambda t: "Basic " + base64.b64encode(t.encode("latin-1")).decode()),
    st.sampled_from(["sha256=" + "0" * 64, str(NOW), "9" * 400, "1e400", "nan", "-1", "Basic",
                     "Basic \u00e9\u00e9", "x" * 20_000]),
)
HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4)


Maybe = Any  # a function from a field's plausible strategy to the strategy used


def wild(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field as a provider sends it, or anything at all."""
    return st.one_of(plausible, plausible, ANY_JSON)


def tame(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field as a provider sends it (payloads that get applied, so they are fuzzed too)."""
    return plausible


GOOD_TIMES = st.one_of(st.integers(NOW - 86_400 * 30, NOW),
                       st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.000+01:00"]))
TIMES = st.one_of(GOOD_TIMES, st.sampled_from([
    "2026-11-23T10:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "yesterday", 1, 1e12, -5, NOW + 86_400 * 3]))
TOKEN = st.one_of(st.sampled_from(TOKENS), st.sampled_from(TOKENS).map(lambda t: t + "\ud800"),
                  st.sampled_from(TOKENS).map(lambda t: t[:-2]))
MESSAGE_ID = st.one_of(st.sampled_from(MESSAGE_IDS), TEXT)


def payload_bytes(payload: Any, raw: str) -> bytes:
    """JSON as a provider would send it (surrogates escaped), with RAW fragments put in."""
    text = json.dumps(payload)  # NaN and Infinity as Python writes them: invalid JSON
    return text.replace(json.dumps(RAW), raw).encode()


@st.composite
def bodies(draw: Any, shaped: Any) -> bytes:
    """Raw bytes, any JSON, or a provider-shaped payload (`shaped(tame)` or `shaped(wild)`)
    with wild values anywhere."""
    kind = draw(st.sampled_from(["bytes", "json", "tame", "wild", "wild"]))
    if kind == "bytes":
        return bytes(draw(st.binary(max_size=200)))
    if kind == "json":
        payload = draw(ANY_JSON)
    else:
        payload = draw(shaped(tame) if kind == "tame" else shaped(wild))
    return payload_bytes(payload, draw(RAW_FRAGMENTS))


def times(m: Maybe) -> st.SearchStrategy[Any]:
    return GOOD_TIMES if m is tame else m(TIMES)


def token(m: Maybe) -> st.SearchStrategy[Any]:
    return st.sampled_from(TOKENS[:3]) if m is tame else m(TOKEN)


def message_id(m: Maybe) -> st.SearchStrategy[Any]:
    return st.sampled_from(MESSAGE_IDS) if m is tame else m(MESSAGE_ID)


def generic_event(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"event": m(st.sampled_from(["delivered", "bounce", "open", "click", "complaint",
                                     "unsubscribe", "resubscribe", "hard_bounce", "sent"])),
         "timestamp": times(m), "rid": token(m)},
        optional={"message_id": message_id(m),
                  "id": m(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                  min_size=1, max_size=12)),
                  "status": m(st.sampled_from(["5.1.1", "4.2.2", "550"])),
                  "diagnostic": m(TEXT), "url": m(TEXT), "machine": m(st.booleans()),
                  "scope": m(st.sampled_from(["all", "type"]))})


def generic_payload(m: Maybe) -> st.SearchStrategy[Any]:
    events = st.lists(m(generic_event(m)), min_size=1, max_size=4)
    return st.one_of(events, st.fixed_dictionaries({"events": m(events)}))


def sendgrid_payload(m: Maybe) -> st.SearchStrategy[Any]:
    event = st.fixed_dictionaries(
        {"event": m(st.sampled_from(["processed", "delivered", "deferred", "dropped", "bounce",
                                     "open", "click", "spamreport", "unsubscribe",
                                     "group_unsubscribe", "group_resubscribe", "new_kind"])),
         "timestamp": times(m)},
        optional={"sb_rid": token(m), "smtp-id": message_id(m),
                  "unique_args": m(st.fixed_dictionaries({"sb_rid": token(m)})),
                  "sg_event_id": m(TEXT), "status": m(st.sampled_from(["5.1.1", "4.2.0"])),
                  "reason": m(TEXT), "type": m(st.sampled_from(["bounce", "blocked"])),
                  "response": m(TEXT), "url": m(TEXT), "sg_machine_open": ANY_JSON,
                  "asm_group_id": m(st.integers(0, 100))})
    return st.lists(m(event), min_size=1, max_size=4)


def mailgun_data(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"event": m(st.sampled_from(["accepted", "delivered", "failed", "opened", "clicked",
                                     "complained", "unsubscribed", "rejected", "stored"])),
         "timestamp": times(m), "user-variables": m(st.fixed_dictionaries({"sb_rid": token(m)}))},
        optional={"id": m(TEXT), "severity": m(st.sampled_from(["temporary", "permanent"])),
                  "reason": m(st.sampled_from(["bounce", "suppress-bounce", "generic"])),
                  "delivery-status": m(st.fixed_dictionaries({}, optional={
                      "code": m(st.sampled_from([550, 421, "5.1.1"])),
                      "enhanced-code": m(st.sampled_from(["5.1.1", "4.2.2"])),
                      "message": m(TEXT), "description": m(TEXT)})),
                  "message": m(st.fixed_dictionaries({"headers": m(
                      st.fixed_dictionaries({"message-id": message_id(m)}))})),
                  "client-info": m(st.fixed_dictionaries({"bot": ANY_JSON})),
                  "url": m(TEXT)})


SES_NAMES = st.sampled_from(["Bounce", "Complaint", "Delivery", "Send", "Reject", "Open", "Click",
                             "DeliveryDelay", "Rendering Failure", ""])


def ses_section(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "timestamp": times(m),
        "bounceType": m(st.sampled_from(["Permanent", "Transient", "Undetermined", "Odd"])),
        "bounceSubType": m(st.sampled_from(["General", "NoEmail"])),
        "bouncedRecipients": m(st.lists(m(st.fixed_dictionaries({}, optional={
            "status": m(st.sampled_from(["5.1.1", "4.4.7"])),
            "diagnosticCode": m(TEXT)})), max_size=2)),
        "complaintFeedbackType": m(st.sampled_from(["abuse", "not-spam"])),
        "reason": m(TEXT), "link": m(TEXT), "userAgent": m(TEXT), "delayType": m(TEXT)})


def ses_mail(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"timestamp": times(m), "headers": m(st.lists(m(
        st.fixed_dictionaries({
            "name": m(st.sampled_from(["X-Sendboard-Rid", "Message-ID"])),
            "value": st.one_of(token(m), message_id(m))})), max_size=3)),
        "commonHeaders": m(st.fixed_dictionaries({"messageId": message_id(m)}))})


def ses_notification(m: Maybe) -> st.SearchStrategy[Any]:
    @st.composite
    def notification(draw: Any) -> Any:
        name = draw(m(SES_NAMES))
        out: dict[str, Any] = {draw(st.sampled_from(["eventType", "notificationType"])): name,
                               "mail": draw(m(ses_mail(m)))}
        if isinstance(name, str) and name:
            key = {"DeliveryDelay": "deliveryDelay"}.get(name, name[:1].lower() + name[1:])
            out[key] = draw(m(ses_section(m)))
        return out

    return m(notification())


SNS_URL = st.one_of(
    st.just("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=1"),
    st.sampled_from(["http://sns.eu-west-1.amazonaws.com/", "https://sns.us-east-1.amazonaws.com/",
                     "https://evil.example/", "https://sns.eu-west-1.amazonaws.com:444/",
                     "https://a@sns.eu-west-1.amazonaws.com/", "file:///etc/passwd"]),
    TEXT)
SNS_URL_OK = re.compile(r"^https://sns\.eu-west-1\.amazonaws\.com/[^@]*$")


# ---------------------------------------------------------------- the world a request may change


@pytest.fixture
def world(app, redis_conn):
    mailing = Mailing(name="Autumn", status="sent")
    db.session.add(mailing)
    db.session.flush()
    for i in range(3):
        contact = Contact(email=f"p{i}@example.org", email_key=f"p{i}@example.org")
        db.session.add(contact)
        db.session.flush()
        db.session.add(Recipient(mailing_id=mailing.id, contact_id=contact.id,
                                 address=contact.email, response=Response.SENT.value,
                                 message_id=f"r{i}.ab@sendboard.local",
                                 handed_off_at=datetime.now(UTC) - timedelta(hours=1)))
    db.session.commit()
    totals.bump(mailing.id, {"response:sent": 3})
    db.session.commit()
    assert app.config["SECRET_KEY"] == SECRET_KEY
    assert list(db.session.scalars(select(Recipient.id).order_by(Recipient.id))) == [1, 2, 3]
    app.config.update(GENERIC_WEBHOOK_SECRET=GENERIC_SECRET, MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
                      SENDBOARD_WEBHOOK_BASIC_USER="hook", SENDBOARD_WEBHOOK_BASIC_PASSWORD="pw")
    return mailing.id


def snapshot(mailing_id: int) -> Any:
    """Every row and counter a webhook may change."""
    db.session.rollback()
    db.session.expire_all()
    return (db.session.scalar(select(func.count()).select_from(ResponseEvent)),
            db.session.execute(select(Recipient.__table__).order_by(Recipient.id)).all(),
            db.session.execute(select(Contact.__table__).order_by(Contact.id)).all(),
            sorted(totals.get(mailing_id).items()))


class Outcomes:
    """Posts one request; checks no 5xx, a JSON answer, and nothing changed on a refusal."""

    def __init__(self, client: Any, mailing_id: int) -> None:
        self.client, self.mailing_id, self.seen = client, mailing_id, Counter[int | str]()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Any:
        before = snapshot(self.mailing_id)
        resp = self.client.post(path, data=body, headers={"Content-Type": "application/json",
                                                          **headers})
        assert resp.status_code < 500, (resp.status_code, resp.data[:300], body[:300])
        assert resp.mimetype == "application/json", resp.data[:300]
        if resp.status_code >= 400:
            assert snapshot(self.mailing_id) == before, (resp.status_code, resp.json)
        self.seen[resp.status_code] += 1
        if resp.status_code == 200:
            answer = resp.json
            if answer.get("received", 0) > answer.get("unmatched", 0):
                self.seen["recorded"] += 1  # events that reached a recipient's timeline
        return resp

    def reached(self, *outcomes: int | str) -> None:
        assert all(self.seen[outcome] for outcome in outcomes), self.seen


# ---------------------------------------------------------------- generic


def test_generic_endpoint_fuzzed(client, world):
    outcomes = Outcomes(client, world)

    @FUZZ
    @example(body=json.dumps([{"event": "open", "timestamp": NOW, "rid": TOKENS[0]}]).encode(),
             signed=True, headers={})
    @given(body=bodies(generic_payload), signed=st.sampled_from([True, True, False]),
           headers=HEADERS)
    def run(body: bytes, signed: bool, headers: dict[str, str]) -> None:
        if signed:
            ts = str(int(time.time()))
            headers = {**headers, "X-Sendboard-Timestamp": ts,
                       "X-Sendboard-Signature": generic_signature(GENERIC_SECRET, ts, body)}
        outcomes.post("/webhooks/generic", body, headers)

    run()
    outcomes.reached(200, "recorded", 400, 401)


# ---------------------------------------------------------------- SendGrid


def test_sendgrid_endpoint_fuzzed(app, client, world):
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] = base64.b64encode(der).decode()
    outcomes = Outcomes(client, world)

    @FUZZ
    @example(body=json.dumps([{"event": "open", "timestamp": NOW, "sb_rid": TOKENS[1]}]).encode(),
             how="basic", headers={})
    @given(body=bodies(sendgrid_payload), how=st.sampled_from(["ecdsa", "basic", "none"]),
           headers=HEADERS)
    def run(body: bytes, how: str, headers: dict[str, str]) -> None:
        if how == "ecdsa":
            ts = str(int(time.time()))
            sig = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
            headers = {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": ts,
                       "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode()}
        elif how == "basic":
            headers = {**headers, "Authorization": BASIC}
            headers.pop("X-Twilio-Email-Event-Webhook-Signature", None)
        outcomes.post("/webhooks/sendgrid", body, headers)

    run()
    outcomes.reached(200, "recorded", 400, 401)


# ---------------------------------------------------------------- Mailgun


def mailgun_signature(ts: str, token: str) -> str:
    return hmac.new(MAILGUN_KEY.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()


def test_mailgun_endpoint_fuzzed(client, world):
    outcomes = Outcomes(client, world)

    def unsigned(m: Maybe) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.fixed_dictionaries({"signature": ANY_JSON, "event-data": m(mailgun_data(m))}),
            st.fixed_dictionaries({"signature": st.fixed_dictionaries({
                "timestamp": m(st.just(str(NOW))), "token": m(TEXT),
                "signature": m(st.just("0" * 64))})}))

    @FUZZ
    @example(data=json.dumps({"event": "opened", "timestamp": NOW,
                              "user-variables": {"sb_rid": TOKENS[2]}}).encode(),
             envelope=b"{}", sign=True, headers={})
    @given(data=bodies(mailgun_data), envelope=bodies(unsigned),
           sign=st.sampled_from([True, True, False]), headers=HEADERS)
    def run(data: bytes, envelope: bytes, sign: bool, headers: dict[str, str]) -> None:
        body = envelope
        if sign:  # a correct signature around fuzzed event-data (raw bytes make it unreadable)
            ts, token = str(int(time.time())), uuid.uuid4().hex
            signature = json.dumps({"timestamp": ts, "token": token,
                                    "signature": mailgun_signature(ts, token)})
            body = b'{"signature": ' + signature.encode() + b', "event-data": ' + data + b"}"
        outcomes.post("/webhooks/mailgun", body, headers)

    run()
    outcomes.reached(200, "recorded", 400, 401)


# ---------------------------------------------------------------- SES (via SNS)


@pytest.fixture
def sns_key(app):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    app.config["SES_SNS_CERT_PEM"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    app.config["SES_SNS_TOPIC_ARNS"] = TOPIC
    return key


@pytest.fixture
def fetched(app):
    urls: list[str] = []

    def fetch(url: str) -> bool:
        urls.append(url)
        return True

    app.extensions["sendboard.sns_subscribe_fetcher"] = fetch
    return urls


def sns_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_ses_endpoint_fuzzed_past_the_signature(client, world, sns_key, fetched):
    """Signed SNS messages whose Message (the SES notification) is fuzzed, and signed
    confirmations whose SubscribeURL is: only an https URL on the topic's SNS host is fetched."""
    outcomes = Outcomes(client, world)

    @FUZZ
    @example(inner={"eventType": "Open", "mail": {"timestamp": NOW, "headers": [
                 {"name": "X-Sendboard-Rid", "value": TOKENS[0]}]}}, raw="1",
             kind="Notification", url="", version="2", headers={}, message_id="m-0",
             subject=None)
    @example(inner={}, raw="1", kind="SubscriptionConfirmation",
             url="https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=1",
             version="1", headers={}, message_id="m-1", subject=None)
    @given(inner=st.one_of(ses_notification(tame), ses_notification(wild)),
           raw=RAW_FRAGMENTS,
           kind=st.sampled_from(["Notification"] * 4 + ["SubscriptionConfirmation",
                                                        "UnsubscribeConfirmation"]),
           url=SNS_URL, version=st.sampled_from(["1", "2"]), headers=HEADERS,
           message_id=st.one_of(st.just("m-1"), TEXT), subject=st.one_of(st.none(), TEXT))
    def run(inner: Any, raw: str, kind: str, url: str, version: str, headers: dict[str, str],
            message_id: str, subject: str | None) -> None:
        message: dict[str, Any] = {
            "Type": kind, "MessageId": message_id, "TopicArn": TOPIC, "Timestamp": sns_now(),
            "Message": payload_bytes(inner, raw).decode(), "SignatureVersion": version}
        if kind == "Notification" and subject is not None:
            message["Subject"] = subject
        if kind != "Notification":
            message.update(SubscribeURL=url, Token="tok")
        try:
            to_sign = sns_string_to_sign(message)
        except UnicodeEncodeError:  # a lone surrogate no signer can sign: sent unsigned
            to_sign = b""
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        signature = sns_key.sign(to_sign, padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        outcomes.post("/webhooks/ses", json.dumps(message).encode(), headers)

    run()
    outcomes.reached(200, "recorded", 400)
    assert fetched and all(SNS_URL_OK.match(url) for url in fetched), fetched


def sns_envelope(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"Type": m(st.sampled_from(["Notification", "SubscriptionConfirmation",
                                    "UnsubscribeConfirmation"]))},
        optional={"MessageId": m(TEXT), "TopicArn": m(st.just(TOPIC)),
                  "Timestamp": m(st.sampled_from(["2026-11-23T10:00:00.000Z", "now"])),
                  "Message": m(ses_notification(wild).map(json.dumps)), "Subject": m(TEXT),
                  "SubscribeURL": m(SNS_URL), "Token": m(TEXT),
                  "Signature": m(st.just("QUJD")), "SignatureVersion": m(
                      st.sampled_from(["1", "2", "3"])), "SigningCertURL": m(TEXT)})


@pytest.mark.parametrize("signed", [True, False], ids=["sns-signatures", "basic-auth"])
def test_ses_endpoint_fuzzed_envelope(app, client, world, sns_key, fetched, signed):
    """Any body and any SNS envelope; with basic auth (no certificate) valid credentials take
    the fuzzed envelope past authentication."""
    if not signed:
        app.config["SES_SNS_CERT_PEM"] = ""
    outcomes = Outcomes(client, world)

    @settings(FUZZ, max_examples=75)
    @given(body=bodies(sns_envelope), basic=st.booleans(), headers=HEADERS)
    def run(body: bytes, basic: bool, headers: dict[str, str]) -> None:
        body = body.replace(b'"now"', json.dumps(sns_now()).encode())
        if basic:
            headers = {**headers, "Authorization": BASIC}
        outcomes.post("/webhooks/ses", body, headers)

    run()
    # Signed: nothing unsigned gets in. Basic auth: past the credentials, a 400 for what is
    # not an SNS message (the signed test above reaches the notifications applied).
    outcomes.reached(401) if signed else outcomes.reached(400, 401)
    assert all(SNS_URL_OK.match(url) for url in fetched), fetched


# ---------------------------------------------------------------- Postmark

PM_BASIC = "Basic " + base64.b64encode(b"pm:pw").decode()
PM_TYPES = st.sampled_from(["HardBounce", "Transient", "SoftBounce", "AutoResponder", "Blocked",
                            "SpamComplaint", "Unknown", "Subscribe", "DMARCPolicy", "Odd"])


def postmark_record(m: Maybe) -> st.SearchStrategy[Any]:
    iso = st.one_of(st.just(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")),
                    m(TIMES))
    return st.fixed_dictionaries(
        {"RecordType": m(st.sampled_from(["Delivery", "Bounce", "SpamComplaint", "Open",
                                          "Click", "SubscriptionChange", "Inbound"])),
         "Metadata": m(st.fixed_dictionaries({"sb_rid": token(m)}))},
        optional={"MessageID": message_id(m), "DeliveredAt": iso, "BouncedAt": iso,
                  "ReceivedAt": iso, "ChangedAt": iso, "ID": m(HUGE_INTS), "Type": m(PM_TYPES),
                  "TypeCode": m(st.sampled_from([1, 2, 64, 4096, 100006, 99])),
                  "Details": m(TEXT), "Description": m(TEXT), "UserAgent": m(TEXT),
                  "OriginalLink": m(TEXT), "Content": m(st.one_of(TEXT, token(m).map(
                      lambda t: f"X-Sendboard-Rid: {t}\r\n"))),
                  "SuppressSending": m(st.booleans()),
                  "SuppressionReason": m(st.sampled_from(["ManualSuppression", "HardBounce"])),
                  "Origin": m(st.sampled_from(["Recipient", "Customer"]))})


def postmark_payload(m: Maybe) -> st.SearchStrategy[Any]:
    return st.one_of(m(postmark_record(m)), st.lists(m(postmark_record(m)), max_size=3))


def test_postmark_endpoint_fuzzed(app, client, world):
    app.config.update(POSTMARK_WEBHOOK_USER="pm", POSTMARK_WEBHOOK_PASSWORD="pw")
    outcomes = Outcomes(client, world)

    @FUZZ
    @example(body=json.dumps({"RecordType": "Open", "ReceivedAt": "2026-11-23T10:00:00Z",
                              "Metadata": {"sb_rid": TOKENS[0]}}).encode(), basic=True,
             headers={})
    @given(body=bodies(postmark_payload), basic=st.sampled_from([True, True, False]),
           headers=HEADERS)
    def run(body: bytes, basic: bool, headers: dict[str, str]) -> None:
        if basic:
            headers = {**headers, "Authorization": PM_BASIC}
        outcomes.post("/webhooks/postmark", body, headers)

    run()
    outcomes.reached(200, "recorded", 400, 401)


# ---------------------------------------------------------------- Brevo

BREVO_TOKEN = "brevo-secret-token"


def brevo_event(m: Maybe) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"event": m(st.sampled_from(["request", "delivered", "soft_bounce", "hardBounce",
                                     "blocked", "spam", "opened", "unique_opened", "proxy_open",
                                     "click", "unsubscribed", "invalid_email", "error",
                                     "list_addition"])),
         "ts_event": times(m), "X-Mailin-custom": m(st.one_of(token(m), token(m).map(
             lambda t: json.dumps({"sb_rid": t}))))},
        optional={"ts_epoch": m(st.one_of(st.integers(NOW * 1000 - 10**8, NOW * 1000),
                                          HUGE_INTS)),
                  "ts": times(m), "message-id": message_id(m), "email": m(TEXT),
                  "reason": m(TEXT), "link": m(TEXT), "id": m(HUGE_INTS), "tags": ANY_JSON})


def brevo_payload(m: Maybe) -> st.SearchStrategy[Any]:
    return st.one_of(m(brevo_event(m)), st.lists(m(brevo_event(m)), max_size=3))


def test_brevo_endpoint_fuzzed(app, client, world):
    app.config["BREVO_WEBHOOK_TOKEN"] = BREVO_TOKEN
    outcomes = Outcomes(client, world)

    @FUZZ
    @example(body=json.dumps({"event": "click", "ts_event": NOW, "X-Mailin-custom": TOKENS[1],
                              "link": "https://x.example/"}).encode(), how="bearer",
             headers={})
    @given(body=bodies(brevo_payload), how=st.sampled_from(["bearer", "query", "none"]),
           headers=HEADERS)
    def run(body: bytes, how: str, headers: dict[str, str]) -> None:
        path = "/webhooks/brevo"
        if how == "bearer":
            headers = {**headers, "Authorization": f"Bearer {BREVO_TOKEN}"}
        elif how == "query":
            path += f"?token={BREVO_TOKEN}"
            headers.pop("Authorization", None)
        outcomes.post(path, body, headers)

    run()
    outcomes.reached(200, "recorded", 400, 401)

"""DKIM keys: generated, uploaded and deleted; messages handed to a real SMTP server carry a
signature that dkimpy verifies against the TXT record Settings displays."""

from __future__ import annotations

import base64
import email
import random
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import event, select

from app.domain.dkim import SIGNED_HEADERS
from app.extensions import db
from app.models import DkimKey, Recipient
from app.services import dkim as service
from app.services import mailings
from app.services.rendering import TemplateProblem, builder_for
from tests.factories import make_audience, make_mailing, run_worker

WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MESSAGE = (
    b"From: Shop <news@shop.example>\r\nTo: Ann <ann@example.org>\r\nSubject: Hello\r\n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <r1.abc@shop.example>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\nHello  Ann \r\n\r\n"
)


def pem_of(key, fmt=serialization.PrivateFormat.TraditionalOpenSSL, encryption=None) -> str:
    encryption = encryption or serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def dns_for(*keys: DkimKey):
    """A resolver answering with exactly the records the settings page shows."""
    records = {f"{service.record_for(k).name}.": service.record_for(k).value for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode())
        return value.encode() if value is not None else None

    return lookup


def signature_tags(raw: bytes) -> dict[str, str]:
    value = email.message_from_bytes(raw)["DKIM-Signature"]
    tags = {}
    for part in "".join(value.split()).split(";"):
        if part:
            name, _, tag_value = part.partition("=")
            tags[name] = tag_value
    return tags


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_generate_stores_a_2048_bit_key_and_its_public_record(app):
    key = service.generate(" Shop.Example. ", " SB1 ")
    assert (key.domain, key.selector, key.bits, key.origin) == ("shop.example", "sb1", 2048, "generated")
    private = serialization.load_pem_private_key(key.private_key_pem.encode(), password=None)
    public_der = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    record = service.record_for(key)
    assert record.name == "sb1._domainkey.shop.example"
    assert record.value == "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode()
    assert record.zone_line.startswith('sb1._domainkey.shop.example. IN TXT ( "v=DKIM1; k=rsa; p=')


def test_one_key_per_domain(app):
    service.generate("shop.example", "sb1")
    with pytest.raises(service.DkimError, match="shop.example has a DKIM key already"):
        service.generate("SHOP.example", "sb2")
    assert db.session.execute(select(DkimKey.selector)).scalars().all() == ["sb1"]


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.PrivateFormat.PKCS8])
def test_upload_keeps_the_key_and_derives_the_record(app, rsa_key, fmt):
    pem = pem_of(rsa_key, fmt).replace("\n", "\r\n")  # as saved on Windows
    key = service.upload("shop.example", "old2019", pem)
    assert (key.bits, key.origin) == (2048, "uploaded")
    stored = serialization.load_pem_private_key(key.private_key_pem.encode(), password=None)
    assert stored.private_numbers() == rsa_key.private_numbers()
    public = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key == base64.b64encode(public).decode()


def _small_rsa_pem(bits: int) -> str:
    """An RSA key below the DKIM minimum (libraries refuse to generate one)."""
    rng = random.Random(bits)

    def prime(n: int) -> int:
        while True:
            c = rng.getrandbits(n) | (1 << (n - 1)) | 1
            if all(pow(a, c - 1, c) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
                return c

    p, q, e = prime(bits // 2), prime(bits // 2), 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                    rsa.RSAPublicNumbers(e, p * q))
    return pem_of(numbers.private_key(unsafe_skip_rsa_key_validation=True))


@pytest.mark.parametrize("pem,message", [
    ("", "Paste or upload the private key"),
    ("hello", "This is not a PEM private key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAnotreallyakey\n-----END RSA PRIVATE KEY-----\n",
     "the PEM text is damaged or incomplete"),
    ("x" * 30_000, "too large"),
    ("public", "This is a public key or certificate; upload the private key."),
    ("encrypted", "protected by a passphrase"),
    ("ec", "Only RSA keys are supported"),
    ("ed25519", "Only RSA keys are supported"),
    ("small", "The key has 512 bits; DKIM needs an RSA key of 1024 to 4096 bits"),
])
def test_bad_uploads_are_refused_with_a_reason(app, rsa_key, pem, message):
    samples = {
        "public": lambda: rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "encrypted": lambda: pem_of(rsa_key, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"secret")),
        "ec": lambda: pem_of(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        "ed25519": lambda: pem_of(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8),
        "small": lambda: _small_rsa_pem(512),
    }
    text = samples[pem]() if pem in samples else pem
    with pytest.raises(service.DkimError) as info:
        service.upload("shop.example", "sb1", text)
    assert message in str(info.value)
    assert db.session.execute(select(DkimKey)).first() is None


@pytest.mark.parametrize("domain,selector,message", [
    ("", "sb1", "Enter the domain"), ("localhost", "sb1", "not a valid domain name"),
    ("shop.example", "", "Enter a selector"), ("shop.example", "s_1", "not a valid selector"),
])
def test_bad_names_are_refused(app, domain, selector, message):
    with pytest.raises(service.DkimError, match=message):
        service.generate(domain, selector)


def test_delete(app):
    key = service.generate("shop.example", "sb1")
    assert service.delete(key.id) == "shop.example"
    db.session.commit()
    assert service.delete(key.id) is None
    assert service.signer_for("shop.example") is None


def test_the_signature_is_the_one_dkimpy_sign_makes(app, monkeypatch):
    """Same bytes as dkim.sign() with relaxed/relaxed over the same header fields at the same time."""
    key = service.generate("shop.example", "sb1")
    db.session.commit()
    signer = service.signer_for("shop.example")
    assert signer is not None
    signed = signer(MESSAGE, WHEN)
    monkeypatch.setattr(dkim.time, "time", lambda: WHEN.timestamp())
    expected = dkim.sign(MESSAGE, b"sb1", b"shop.example", key.private_key_pem.encode(),
                         canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[h.lower().encode() for h in SIGNED_HEADERS])
    assert signed == expected + MESSAGE
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    tampered = signed.replace(b"Subject: Hello", b"Subject: Hullo")
    assert not dkim.verify(tampered, dnsfunc=dns_for(key))


def test_subdomains_use_the_nearest_key(app):
    service.generate("shop.example", "parent")
    service.generate("eu.mail.shop.example", "child")
    db.session.commit()
    assert service.signer_for("news@shop.example").selector == "parent"
    assert service.signer_for("mail.shop.example").domain == "shop.example"
    assert service.signer_for("EU.Mail.Shop.Example").selector == "child"
    assert service.signer_for("other.example") is None
    assert service.signer_for("") is None and service.signer_for("not a domain") is None


def test_a_damaged_stored_key_stops_the_build_with_a_reason(app):
    db.session.add(DkimKey(domain="shop.example", selector="sb1", private_key_pem="garbage",
                           public_key="AAAA", bits=2048))
    db.session.commit()
    with pytest.raises(TemplateProblem, match="the DKIM key of shop.example cannot be used"):
        builder_for(1, {"subject": "s", "html": "", "text": "t", "from": "news@shop.example",
                        "reply_to": "", "base_url": "http://x", "bounce_domain": "b.example",
                        "boundary": "b", "domain": "shop.example"})


def _dkim_key_queries(app) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM dkim_keys" in statement and "private_key_pem" in statement:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    return seen


def test_sent_messages_verify_against_the_displayed_record(app, redis_conn, smtp):  # noqa: F811
    app.config["BATCH_SIZE"] = 4
    key = service.generate("shop.example", "sb202611")
    db.session.commit()
    queries = _dkim_key_queries(app)
    mailing = make_mailing([make_audience(10)], from_address="news@shop.example",
                           reply_to="help@shop.example", subject="Hi {{ name }} – ☃")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    # The key is read once per batch (3 batches of at most 4), never once per message.
    assert len(queries) == 3
    received = smtp.handler.messages
    assert len(received) == 10
    dns = dns_for(key)
    for message in received:
        assert message.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert dkim.verify(message.data, dnsfunc=dns), message.data[:800]
        tags = signature_tags(message.data)
        assert (tags["d"], tags["s"], tags["c"]) == ("shop.example", "sb202611", "relaxed/relaxed")
        assert tags["h"].split(":") == [h.lower() for h in SIGNED_HEADERS]
        parsed = email.message_from_bytes(message.data)
        sent = email.utils.parsedate_to_datetime(parsed["Date"])
        assert int(tags["t"]) == int(sent.timestamp())


def test_rebuilt_messages_carry_the_same_signature(app, redis_conn, smtp):  # noqa: F811
    from app.services.history import rebuild_message

    service.generate("shop.example", "sb1")
    db.session.commit()
    mailing = make_mailing([make_audience(2)], from_address="news@shop.example")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    by_rcpt = smtp.by_recipient()
    for recipient in db.session.execute(select(Recipient)).scalars():
        assert rebuild_message(recipient) == by_rcpt[recipient.address][0].data


def test_mail_from_a_domain_without_a_key_is_not_signed(app, redis_conn, smtp):  # noqa: F811
    service.generate("other.example", "sb1")
    db.session.commit()
    mailing = make_mailing([make_audience(2)], from_address="news@shop.example")
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert len(smtp.handler.messages) == 2
    assert all(b"DKIM-Signature" not in m.data for m in smtp.handler.messages)


def test_a_key_deleted_applies_from_the_next_batch(app, redis_conn, smtp):  # noqa: F811
    key = service.generate("shop.example", "sb1")
    db.session.commit()
    content = {"subject": "s", "html": "", "text": "t", "from": "news@shop.example", "reply_to": "",
               "base_url": "http://x", "bounce_domain": "b.example", "boundary": "b",
               "domain": "shop.example"}
    built = builder_for(7, content).build(merge={}, address="a@example.org", token="t",
                                          message_id="m@shop.example", sent_at=WHEN)
    assert built.data.startswith(b"DKIM-Signature:")
    service.delete(key.id)
    db.session.commit()
    again = builder_for(7, content).build(merge={}, address="a@example.org", token="t",
                                          message_id="m@shop.example", sent_at=WHEN)
    assert again.data.startswith(b"From:") and again.data in built.data

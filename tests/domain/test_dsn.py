"""Bounce mail parsing against real DSNs from several MTAs (tests/data/dsn, see SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain.dsn import parse, verp_token
from app.domain.responses import Response

CORPUS = Path(__file__).parents[1] / "data" / "dsn"
H, S, B, SPAM = Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED, Response.SPAM

# file, kind, classification, status, final recipient (prefix), original Message-ID
CASES = [
    ("arf-01.eml", "complaint", SPAM, None, None, None),
    ("arf-02.eml", "complaint", SPAM, None, None, "000000000000000000000000.smtp@example.com"),
    ("lhost-exchange2007-01.eml", "bounce", H, "5.1.1", "mikeneko@example.co.jp", None),
    ("lhost-exim-01.eml", "bounce", B, "5.7.0", "kijitora@example.ed.jp",
     "E1P1ce6-000Egt-GZ@e1.example.org"),
    ("lhost-exim-02.eml", "bounce", H, "5.1.1", "kijitora@example.jp",
     "E1X58pB-0004bW-2s@marutamachi.example.org"),
    ("lhost-exim-03.eml", "bounce", B, "5.7.0", "kijitora@example.jp",
     "hogeuoiuadogalhg.dg9i09@example.jp"),
    ("lhost-gmail-01.eml", "bounce", H, "5.1.1", "userunknown@example.jp",
     "D992C2C3-F175-4C4D-97E2-53A90E4E5BF5@gmail.com"),
    ("lhost-gmail-03.eml", "bounce", B, "5.7.0", "kijitora@example.co.jp",
     "CBA48452-0888-4AAC-AA4E-0F54D382117F@gmail.com"),
    ("lhost-office365-01.eml", "bounce", H, "5.1.10", None, None),
    ("lhost-office365-02.eml", "bounce", H, "5.1.1", None, None),
    ("lhost-postfix-01.eml", "bounce", H, "5.1.1", "r@p351355.pool.example.ne.jp", None),
    ("lhost-postfix-02.eml", "bounce", H, "5.2.1", "filtered@example.co.jp", None),
    ("lhost-postfix-03.eml", "bounce", H, "5.0.0", "kijitora@example.net",
     "20140701000000.000000000000@e1.example.ne.jp"),
    ("lhost-qmail-01.eml", "bounce", H, "5.5.0", "kijitora@example.ne.jp",
     "000000000.9999999999999.JavaMail.postmaster@mailhub"),
    ("lhost-qmail-02.eml", "bounce", H, "5.1.1", "userunknown@example.jp", None),
    ("lhost-qmail-03.eml", "bounce", B, "5.7.1", "kijitora@example.org",
     "00000000000000.5529.qmail@nijo.example.jp"),
    ("lhost-sendmail-01.eml", "bounce", H, "5.1.1", "userunknown@bouncehammer.jp",
     "E1C50F1B-1C83-4820-BC36-AC6FBFBE8568@example.org"),
    ("lhost-sendmail-02.eml", "bounce", H, "5.1.1", "userunknown@example.org",
     "C6625D0F-A302-4980-BEAB-2AF883EA0116@example.jp"),
    ("lhost-sendmail-03.eml", "bounce", H, "5.1.1", "bounce0@example.org",
     "2459BC68-A7A5-4FCD-99FE-8CE9335880BF@example.co.jp"),
]


def test_every_corpus_file_has_a_case():
    assert {c[0] for c in CASES} == {p.name for p in CORPUS.glob("*.eml")}


@pytest.mark.parametrize(("name", "kind", "response", "status", "recipient", "message_id"), CASES)
def test_corpus(name, kind, response, status, recipient, message_id):
    report = parse((CORPUS / name).read_bytes())
    assert (report.kind, report.response, report.status) == (kind, response, status)
    if recipient is None:
        assert report.final_recipient is None
    else:
        assert report.final_recipient is not None
        assert report.final_recipient.startswith(recipient)
    assert report.original_message_id == message_id
    assert report.token is None  # none of these was sent by us


TOKEN = "MTIz.abc-DEF_ghi"

OUR_DSN = f"""\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: bounce+{TOKEN}@bounces.sendboard.local
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-1@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail system could not deliver your message.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; ann@example.org
Original-Recipient: rfc822;ann@example.org
Action: {{action}}
Status: {{status}}
Diagnostic-Code: smtp; {{diagnostic}}

--B
Content-Type: text/rfc822-headers

From: news@example.com
To: ann@example.org
Message-ID: <r1.a1b2c3@sendboard.local>
Subject: Autumn

--B--
"""


@pytest.mark.parametrize(("action", "status", "diagnostic", "kind", "response"), [
    ("failed", "5.1.1", "550 5.1.1 user unknown", "bounce", H),
    ("failed", "5.2.2", "552 5.2.2 mailbox full", "bounce", S),
    ("failed", "5.7.1", "554 5.7.1 blocked using zen.spamhaus.org", "bounce", B),
    ("failed", "4.4.7", "retry timeout exceeded", "bounce", S),
    ("delayed", "4.4.1", "connection timed out", "delay", None),
    ("delivered", "2.0.0", "250 ok", "other", None),
])
def test_our_dsn(action, status, diagnostic, kind, response):
    raw = OUR_DSN.replace("{action}", action).replace("{status}", status)
    raw = raw.replace("{diagnostic}", diagnostic).encode()
    report = parse(raw)
    assert (report.kind, report.response) == (kind, response)
    assert report.token == TOKEN
    assert report.original_message_id == "r1.a1b2c3@sendboard.local"
    assert report.final_recipient == "ann@example.org"
    assert report.report_message_id == "dsn-1@mx.example.net"


def test_envelope_recipient_wins_and_rid_header_is_a_fallback():
    raw = OUR_DSN.replace(f"bounce+{TOKEN}@", "postmaster@").replace(
        "Subject: Autumn", "Subject: Autumn\nX-Sendboard-Rid: OTk5.sig")
    raw = raw.replace("{action}", "failed").replace("{status}", "5.1.1")
    raw = raw.replace("{diagnostic}", "550 no").encode()
    assert parse(raw).token == "OTk5.sig"
    assert parse(raw, ["bounce+T0K.en@bounces.example"]).token == "T0K.en"


def test_plain_text_that_is_no_bounce():
    raw = b"From: ann@example.org\nTo: bounce+x@b.example\nSubject: hello\n\nJust saying hi\n"
    report = parse(raw)
    assert report.kind == "other" and report.response is None and report.token == "x"


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe", b"Content-Type: multipart/report\n\n--",
                                 b"Content-Type: message/delivery-status\n\n\n\n"])
def test_garbage_does_not_raise(raw):
    assert parse(raw).kind in ("other", "bounce", "delay")


def test_verp_token():
    assert verp_token("Bounce+abc.DEF-1_x@bounces.example") == "abc.DEF-1_x"
    assert verp_token("<bounce+t@x>") == "t"
    assert verp_token("someone@example.org") is None


@pytest.mark.parametrize(("subject", "envelope", "kind"), [
    ("unsubscribe", ["bounce+MQ.sig@b.example"], "unsubscribe"),
    ("Re: Unsubscribe", ["bounce+MQ.sig@b.example"], "unsubscribe"),
    ("unsubscribe", ["postmaster@b.example"], "other"),  # no token in the address
    ("Please unsubscribe me", ["bounce+MQ.sig@b.example"], "other"),
])
def test_mailto_unsubscribe(subject, envelope, kind):
    report = parse(f"From: a@example.org\r\nSubject: {subject}\r\n\r\n".encode(), envelope)
    assert report.kind == kind
    if kind == "unsubscribe":
        assert report.token == "MQ.sig" and report.response is Response.UNSUBSCRIBED

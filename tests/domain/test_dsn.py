"""Reading bounce mail: one verdict per recipient, from samples of each MTA format (tests/data/dsn,
written for these tests with invented addresses), and robustness on any input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.bounces import Reason
from app.domain.dsn import _parse, parse, verp_token
from app.domain.responses import Response

SAMPLES = Path(__file__).parents[1] / "data" / "dsn"
H, S, B, SPAM = Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED, Response.SPAM

# file, kind, response, reason, permanent, status, final recipient, original Message-ID
CASES = [
    ("postfix-user-unknown.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "jane@example.org", "r101.k3j2@example.com"),
    ("postfix-blocklisted.eml", "bounce", B, Reason.BLOCKED, False, "5.7.1",
     "sam@example.org", "r102.k3j2@example.com"),
    ("postfix-delayed-mailbox-full.eml", "delay", None, Reason.MAILBOX_FULL, False, "4.2.2",
     "lee@example.org", "r103.k3j2@example.com"),
    ("sendmail-user-unknown.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "omar@example.org", "r104.k3j2@example.com"),
    # A generic "Status: 5.0.0": the remote server's 5.7.26 (DMARC) is the evidence.
    ("sendmail-generic-status-dmarc.eml", "bounce", B, Reason.SENDER, False, "5.7.26",
     "mia@example.org", "r105.k3j2@example.com"),
    ("exim-user-unknown.eml", "bounce", H, Reason.USER_UNKNOWN, True, None,
     "bob@example.org", "r106.k3j2@example.com"),
    ("exim-retry-timeout.eml", "bounce", S, Reason.EXPIRED, False, None,
     "ada@example.org", "r107.k3j2@example.com"),
    ("qmail-no-mailbox.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "kim@example.org", "r108.k3j2@example.com"),
    ("qmail-spam-filtered.eml", "bounce", B, Reason.FILTERED, False, "5.7.1",
     "noor@example.org", "r109.k3j2@example.com"),
    ("office365-recipient-not-found.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.10",
     "ivy@example.org", "r110.k3j2@example.com"),
    ("exchange-banned-ip.eml", "bounce", B, Reason.BLOCKED, False, "5.7.606",
     "tom@example.org", "r111.k3j2@example.com"),
    ("gmail-plain-user-unknown.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "eva@example.org", "r112.k3j2@example.com"),
    ("gmail-over-quota.eml", "bounce", S, Reason.MAILBOX_FULL, False, "5.2.2",
     "zoe@example.org", "r113.k3j2@example.com"),
    ("jmrp-complaint.eml", "complaint", SPAM, Reason.COMPLAINT, False, None,
     "pat@example.org", "r114.k3j2@example.com"),
    ("arf-complaint.eml", "complaint", SPAM, Reason.COMPLAINT, False, None,
     "rae@example.org", "r115.k3j2@example.com"),
    ("auto-reply.eml", "auto_reply", None, Reason.AUTO_REPLY, False, None,
     "liz@example.org", None),
    ("delivered-dsn.eml", "delivered", None, Reason.DELIVERED, False, "2.0.0",
     "uma@example.org", "r116.k3j2@example.com"),
    # Three recipients; ours is the returned message's To: (bo@), the user unknown.
    ("multi-recipient-dsn.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "bo@example.org", "r117.k3j2@example.com"),
    # multipart without a boundary: the text is still read.
    ("mime-missing-boundary.eml", "bounce", S, Reason.MAILBOX_FULL, False, "5.2.2",
     "dan@example.org", "r118.k3j2@example.com"),
    ("ses-notification.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "gus@example.org", None),
    # A bounce someone forwarded as quoted text is read as the bounce it quotes.
    ("forwarded-bounce.eml", "bounce", H, Reason.USER_UNKNOWN, True, "5.1.1",
     "ned@example.org", "r119.k3j2@example.com"),
]


def test_every_sample_has_a_case():
    assert {c[0] for c in CASES} == {p.name for p in SAMPLES.glob("*.eml")}


@pytest.mark.parametrize(
    ("name", "kind", "response", "reason", "permanent", "status", "recipient", "message_id"),
    CASES)
def test_samples(name, kind, response, reason, permanent, status, recipient, message_id):
    report = parse((SAMPLES / name).read_bytes())
    verdict = report.chosen
    assert verdict is not None
    assert (report.kind, report.response) == (kind, response)
    assert (verdict.reason, verdict.permanent, verdict.status) == (reason, permanent, status)
    assert report.final_recipient == recipient
    assert report.original_message_id == message_id
    if name != "ses-notification.eml":
        assert report.token == "TOKEN"


def test_each_recipient_of_a_report_has_its_own_verdict():
    report = parse((SAMPLES / "multi-recipient-dsn.eml").read_bytes())
    assert [(v.recipient, v.reason, v.response, v.delayed) for v in report.verdicts] == [
        ("al@example.org", Reason.MAILBOX_FULL, S, False),
        ("bo@example.org", Reason.USER_UNKNOWN, H, False),
        ("cy@example.org", Reason.NETWORK_ERROR, S, True),
    ]
    # Without the returned To:, the first failed recipient is the one chosen.
    raw = (SAMPLES / "multi-recipient-dsn.eml").read_bytes().replace(b"To: bo@", b"To: zz@")
    assert parse(raw).chosen.recipient == "al@example.org"


def test_verdict_detail_for_the_timeline():
    verdict = parse((SAMPLES / "postfix-blocklisted.eml").read_bytes()).chosen
    detail = verdict.detail()
    assert detail["reason"] == "blocked" and detail["permanent"] is False
    assert detail["status"] == "5.7.1" and detail["final_recipient"] == "sam@example.org"
    assert "zen.spamhaus.org" in detail["diagnostic"]


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


@pytest.mark.parametrize(("action", "status", "diagnostic", "kind", "response", "reason"), [
    ("failed", "5.1.1", "550 5.1.1 user unknown", "bounce", H, Reason.USER_UNKNOWN),
    ("failed", "5.2.2", "552 5.2.2 mailbox full", "bounce", S, Reason.MAILBOX_FULL),
    ("failed", "5.7.1", "554 5.7.1 blocked using zen.spamhaus.org", "bounce", B,
     Reason.BLOCKED),
    ("failed", "4.4.7", "retry timeout exceeded", "bounce", S, Reason.EXPIRED),
    # The generic field loses to the specific code in the server's words.
    ("failed", "5.0.0", "550 5.1.1 <ann@example.org>: user unknown", "bounce", H,
     Reason.USER_UNKNOWN),
    ("failed", "5.0.0", "550 5.7.23 SPF validation failed", "bounce", B, Reason.SENDER),
    ("failed", "5.1.1", "550 5.7.1 rejected: listed at bl.spamcop.net", "bounce", B,
     Reason.BLOCKED),
    ("delayed", "4.4.1", "connection timed out", "delay", None, Reason.NETWORK_ERROR),
    ("delivered", "2.0.0", "250 ok", "delivered", None, Reason.DELIVERED),
])
def test_our_dsn(action, status, diagnostic, kind, response, reason):
    raw = OUR_DSN.replace("{action}", action).replace("{status}", status)
    raw = raw.replace("{diagnostic}", diagnostic).encode()
    report = parse(raw)
    assert (report.kind, report.response, report.chosen.reason) == (kind, response, reason)
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
    assert report.verdicts == ()


def test_a_persons_reply_with_a_bounce_like_subject_is_no_bounce():
    raw = (b"From: ann@example.org\nTo: bounce+x@b.example\nSubject: Re: your offer was rejected\n"
           b"\nThanks, but the link in the header image did not work.\n")
    assert parse(raw).kind == "other"


def test_an_auto_reply_quoting_an_error_word_is_still_an_auto_reply():
    raw = (b"From: al@example.org\nTo: bounce+x@b.example\nSubject: Out of Office: news\n"
           b"Auto-Submitted: auto-replied\n\nI am away; my mailbox may be full.\n")
    assert parse(raw).kind == "auto_reply"


@pytest.mark.parametrize("raw", [b"", b"\x00\xff\xfe", b"Content-Type: multipart/report\n\n--",
                                 b"Content-Type: message/delivery-status\n\n\n\n",
                                 b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n--\n",
                                 b"Content-Transfer-Encoding: base64\n\n!!!!",
                                 b"Content-Type: text/plain; charset=no-such-charset\n\n\xe9t\xe9"])
def test_garbage_does_not_raise(raw):
    assert parse(raw).kind in ("other", "bounce", "delay")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw):
    report = parse(raw)
    assert report.kind in ("bounce", "delay", "complaint", "unsubscribe", "auto_reply",
                           "delivered", "other")


_HEADER = st.sampled_from([
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n",
    b"Content-Type: message/delivery-status\n", b"Content-Type: multipart/mixed\n",
    b"From: MAILER-DAEMON@example.net\n", b"Subject: Undelivered Mail\n",
    b"Auto-Submitted: auto-replied\n", b"X-Failed-Recipients: a@example.org\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Type: text/plain; charset=\"x-unknown\"\n", b"Content-Transfer-Encoding: base64\n",
])
_LINE = st.sampled_from([
    b"--B\n", b"Content-Type: message/delivery-status\n", b"Final-Recipient: rfc822; a@b.c\n",
    b"Action: failed\n", b"Status: 5.1.1\n", b"Diagnostic-Code: smtp; 550 x\n", b"\n",
    b">>> RCPT To:<a@b.c>\n", b"<<< 550 5.1.1 unknown\n", b"<a@example.org>:\n", b"--B--\n",
    b"{\"notificationType\":\"Bounce\",\"bounce\":{\"bouncedRecipients\":[1, {}]}}\n",
    b"Content-Type: message/feedback-report\n", b"Feedback-Type: abuse\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_HEADER, max_size=5), st.lists(st.one_of(_LINE, st.binary(max_size=40)),
                                               max_size=30))
def test_report_shaped_input_never_raises(headers, lines):
    # The reader itself, without the last-resort guard of `parse`: no error is only hidden.
    report = _parse(b"".join(headers) + b"\n" + b"".join(lines), (), "bounce")
    for verdict in report.verdicts:
        assert verdict.response in (None, H, S, B, SPAM)


def test_verp_token():
    assert verp_token("Bounce+abc.DEF-1_x@bounces.example") == "abc.DEF-1_x"
    assert verp_token("<bounce+t@x>") == "t"
    assert verp_token("someone@example.org") is None


@pytest.mark.parametrize(("subject", "envelope", "kind"), [
    ("unsubscribe", ["bounce+MQ.sig@b.example"], "unsubscribe"),
    ("Re: Unsubscribe", ["bounce+MQ.sig@b.example"], "unsubscribe"),
    ("unsubscribe", ["postmaster@b.example"], "unsubscribe"),  # names nobody: token None
    ("Please unsubscribe me", ["bounce+MQ.sig@b.example"], "other"),
])
def test_mailto_unsubscribe(subject, envelope, kind):
    report = parse(f"From: a@example.org\r\nSubject: {subject}\r\n\r\n".encode(), envelope)
    assert report.kind == kind
    if kind == "unsubscribe":
        assert report.response is Response.UNSUBSCRIBED
        assert report.token == ("MQ.sig" if "bounce+" in envelope[0] else None)


def test_blank_lines_before_the_headers_are_skipped():
    raw = OUR_DSN.replace("{action}", "failed").replace("{status}", "5.1.1")
    raw = raw.replace("{diagnostic}", "550 5.1.1 user unknown")
    report = parse(("\n   \n\r\n" + raw).encode())
    assert (report.kind, report.response, report.token) == ("bounce", H, TOKEN)


def test_a_complaint_copy_returned_as_the_message_itself():
    # Outlook.com's copy of a reported message, passed on by a relay without its wrapper.
    raw = (b"Return-Path: staff@hotmail.example\nX-HmXmrOriginalRecipient: pat@example.org\n"
           b"From: news@example.com\nTo: pat@example.org\nSubject: November news\n"
           b"Message-ID: <r7.k3j2@example.com>\nX-Sendboard-Rid: T7.sig\n\nHello Pat.\n")
    report = parse(raw)
    assert (report.kind, report.response) == ("complaint", SPAM)
    assert report.final_recipient == "pat@example.org"
    assert report.original_message_id == "r7.k3j2@example.com" and report.token == "T7.sig"


def test_a_mail_system_answering_from_an_empty_address_is_a_bounce():
    raw = (b"From: <>\nTo: bounce+x@b.example\nAuto-Submitted: auto-replied\nSubject: \n\n"
           b"You sent mail to ann@example.org. That's not a valid user here.\n")
    report = parse(raw)
    assert report.kind == "bounce" and report.chosen.reason is Reason.USER_UNKNOWN
    assert report.response is S  # no status code, no RCPT TO: not proof enough for hard


def test_a_declared_delivery_report_with_a_broken_status_part_is_read_from_its_text():
    raw = (b"From: postmaster@mx.example.fr\nTo: bounce+x@b.example\n"
           b"Subject: Utilisateur inconnu\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"Z\"\n\n"
           b"--Z\nContent-Type: text/plain; charset=utf-8\n\n"
           b"A message could not be delivered to:\nann@example.fr\n"
           b"L'adresse ci-dessus n'existe pas.\n\n"
           b"--Z\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.fr\n"
           b"--Z--\n")
    report = parse(raw)
    assert report.kind == "bounce" and report.final_recipient == "ann@example.fr"
    assert (report.chosen.reason, report.response) == (Reason.USER_UNKNOWN, S)


def test_a_postponed_delivery_still_being_tried_is_a_delay():
    raw = (b"From: MAILER-DAEMON@mx.example.net\nTo: bounce+x@b.example\n"
           b"Subject: Mail delivery problem\n\n"
           b"Your message to \"ann@example.org\" has been postponed due to a full mailbox.\n"
           b"We will continue to try to deliver your message over the next few days.\n")
    report = parse(raw)
    assert report.kind == "delay" and report.response is None
    assert report.chosen.reason is Reason.MAILBOX_FULL


def test_the_summary_of_the_returned_message_is_not_the_error():
    raw = (b"From: MAILER-DAEMON@mx.example.it\nTo: bounce+x@b.example\n"
           b"Subject: Undeliverable message\n\n"
           b"Your message to ann@example.it has reached our local address ann@example.it, but "
           b"this email address is wrong or no longer valid. Your message has NOT been delivered."
           b"\n\nA summary of the undelivered message you sent follows:\n\nSubject: offer\n\n"
           b"Posting is not allowed here; messages failing SPF checks are rejected.\n")
    report = parse(raw)
    assert report.kind == "bounce" and report.final_recipient == "ann@example.it"
    assert (report.chosen.reason, report.response) == (Reason.HAS_MOVED, H)


def test_text_in_utf8_under_a_wrong_charset_label_is_still_read():
    raw = ("From: MAILER-DAEMON@mx.example.de\nTo: bounce+x@b.example\n"
           "Subject: Unzustellbar\nMIME-Version: 1.0\n"
           "Content-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 8bit\n\n"
           "Die Nachricht konnte nicht zugestellt werden.\n"
           "<ann@example.de>: 550 Empfänger unbekannt (in reply to RCPT TO command)\n").encode()
    report = parse(raw)
    assert report.kind == "bounce" and report.final_recipient == "ann@example.de"
    assert (report.chosen.reason, report.response) == (Reason.USER_UNKNOWN, H)


@pytest.mark.parametrize("text", [
    "Your message about \"Autumn news\" has been waitlisted. Please add yourself to my Guest List "
    "so your messages will go to my Inbox.",
    "This account is protected. Please click on the following link to have your address added "
    "to the recipient's allowed list and to ensure delivery of your email.",
    "This is a one-time automated message to confirm that you're listed on my Guest List.",
])
def test_a_challenge_response_notice_is_no_bounce(text):
    # The message is held until the sender answers (or was let through): nothing failed.
    raw = (OUR_DSN.replace("The mail system could not deliver your message.", text)
           .replace("{action}", "failed").replace("{status}", "4.7.0")
           .replace("{diagnostic}", "450 4.7.0 sender not yet approved"))
    report = parse(raw.encode())
    assert report.kind == "other" and report.response is None


def test_a_server_asking_our_server_to_be_confirmed_is_a_refusal():
    raw = (OUR_DSN.replace("{action}", "failed").replace("{status}", "5.0.0")
           .replace("{diagnostic}", "550 Your server requires confirmation. Visit "
                                    "http://mx.example.net/confirm to confirm this mail server."))
    report = parse(raw.encode())
    assert report.kind == "bounce" and report.response is S


PLAIN_BOUNCE = (b"From: MAILER-DAEMON@mx.example.net\nTo: bounce+x@b.example\n"
                b"Subject: Undeliverable mail\n\n"
                b"Unable to deliver message to: <ann@example.org>\n"
                b"Delivery failed for the following reason:\n"
                b"Server mx.example.org[192.0.2.2] failed with: 550 5.1.1 <ann@example.org> No such "
                b"user here\n\nThis has been a permanent failure.\n")


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending_and_the_reason_on_the_lines_after_the_address(line_end):
    # The line naming the recipient says only that delivery failed; the reason follows it.
    report = parse(PLAIN_BOUNCE.replace(b"\n", line_end))
    assert report.kind == "bounce" and report.final_recipient == "ann@example.org"
    assert (report.chosen.reason, report.chosen.status, report.response) == (
        Reason.USER_UNKNOWN, "5.1.1", H)


@pytest.mark.parametrize("subject", ["Automatische Antwort: Autumn", "Automatisch antwoord: Autumn",
                                     "Autosvar: Autumn", "Автоответ: Autumn", "自動応答: Autumn",
                                     "=?UTF-8?B?0JDQstGC0L7QvtGC0LLQtdGC?=: Autumn"])
def test_auto_replies_in_other_languages(subject):
    raw = (f"From: Anna <ann@example.org>\nTo: bounce+x@b.example\nSubject: {subject}\n"
           "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
           "Back on Monday.\n").encode()
    report = parse(raw)
    assert report.kind == "auto_reply" and report.response is None


def test_a_mailing_list_refusing_a_post_from_a_non_member_is_a_refusal_of_the_sender():
    raw = (b"From: news-admin@lists.example.org\nTo: bounce+x@b.example\n"
           b"Subject: You are not a member (news ML)\n\n"
           b"You are not a member of this mailing list <news@lists.example.org>.\n"
           b"If you know the general guide of this list, please send mail with the body 'guide'.\n")
    report = parse(raw)
    assert report.kind == "bounce" and report.response is B
    assert report.chosen.reason is Reason.SENDER


def test_a_permanent_refusal_asking_for_the_senders_address_to_be_allowed_is_still_a_bounce():
    raw = (OUR_DSN.replace("The mail system could not deliver your message.",
                           "Ask the recipient to have your address added to the allowed list.")
           .replace("{action}", "failed").replace("{status}", "5.7.1")
           .replace("{diagnostic}", "550 5.7.1 Sender not allowed"))
    report = parse(raw.encode())
    assert report.kind == "bounce" and report.response is B


@pytest.mark.parametrize("subject", ["Unzustellbar: Autumn", "Non remis : Autumn",
                                     "Onbestelbaar: Autumn", "=?utf-8?Q?Non_recapitabile:_Autumn?="])
def test_localised_non_delivery_subjects_with_a_named_recipient(subject):
    raw = (f"From: Anna Example <info@example.org>\nTo: bounce+x@b.example\nSubject: {subject}\n\n"
           "Your message could not be delivered to\nann@example.org\n").encode()
    report = parse(raw)
    assert report.kind == "bounce" and report.final_recipient == "ann@example.org"
    assert report.response is S


def test_a_failed_attempt_that_will_be_retried_is_a_delay():
    raw = (b"From: gateway@example.org\nTo: bounce+x@b.example\n"
           b"Subject: =?utf-8?B?RGVsaXZlcnkgZmFpbHVyZSBub3RpZmljYXRpb24=?=\n\n"
           b"Your message with Subject: Autumn\ncould not be delivered to the following "
           b"recipients:\n\nann@example.org\n\nPlease do not resend your original message.\n\n"
           b"Delivery attempts will continue to be made for 5 day(s).\n")
    report = parse(raw)
    assert report.kind == "delay" and report.response is None
    assert report.final_recipient == "ann@example.org"

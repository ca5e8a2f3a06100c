"""Bounce classification (DESIGN.md "Per-recipient responses"; RFC 3463 enhanced status codes).

Hard bounce: a permanent failure about the recipient (5.x.x). Soft bounce: a transient failure
(4.x.x, deferred past retry, mailbox full), or a content filter (the address is fine). Blocked: the
receiving provider blocks the sender (block lists, reputation, authentication).
"""

from __future__ import annotations

import pytest

from app.domain.bounces import classify_status, enhanced_code
from app.domain.responses import Response

HARD, SOFT, BLOCKED = Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED

# (DSN Status field or None, diagnostic text as the server wrote it, expected class)
CASES: list[tuple[str | None, str, Response]] = [
    # --- Postfix (bounce DSN "Diagnostic-Code: smtp; ..." and log "said:" lines) ---
    ("5.1.1", "smtp; 550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown in virtual "
              "mailbox table", HARD),
    (None, "host mx.example.com[203.0.113.7] said: 550 5.1.1 <jane@example.com>: Recipient address "
           "rejected: User unknown in local recipient table (in reply to RCPT TO command)", HARD),
    ("5.4.4", "Host or domain name not found. Name service error for name=exmaple.com type=A: Host not found",
     HARD),
    ("4.4.1", "connect to mx.example.org[198.51.100.7]:25: Connection timed out", SOFT),
    (None, "host mx.example.com[203.0.113.7] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)", SOFT),
    (None, "host mx.example.com[203.0.113.7] said: 554 5.7.1 Service unavailable; Client host "
           "[192.0.2.10] blocked using zen.spamhaus.org", BLOCKED),
    (None, "host mx.example.com[203.0.113.7] said: 450 4.7.1 <jane@example.com>: Recipient address "
           "rejected: Greylisted, see http://postgrey.schweikert.ch/", SOFT),
    ("5.0.0", "smtp; 554 Rejected: 192.0.2.10 listed at zen.spamhaus.org", BLOCKED),
    ("4.0.0", "delivery temporarily suspended: connect to mx.example.net[198.51.100.20]:25: Connection refused",
     SOFT),
    # --- Exim ("SMTP error from remote mail server after ...", "host ... [ip]: ...") ---
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 550 No such user here",
     HARD),
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 550 5.1.1 <bob@example.net>: "
           "Recipient address rejected: User unknown in local recipient table", HARD),
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 421 Service not available, "
           "closing transmission channel", SOFT),
    (None, "SMTP error from remote mail server after MAIL FROM:<bounce@sender.example> SIZE=4020: "
           "550 rejected because 192.0.2.10 is in a black list at zen.spamhaus.org", BLOCKED),
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 552 Mailbox is full", SOFT),
    (None, "host mx.example.net [198.2.131.20]: 550 5.7.1 Client host rejected: listed at bl.spamcop.net",
     BLOCKED),
    (None, "host mx.example.net [64.4.22.10]: 550 5.1.1 <bob@example.net>: Recipient address rejected",
     HARD),
    (None, "Unrouteable address", HARD),
    (None, "retry timeout exceeded", SOFT),
    (None, "all hosts for 'example.net' have been failing for a long time (and retry time not reached)",
     SOFT),
    # --- Microsoft Exchange / Outlook.com ---
    (None, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", HARD),
    (None, "Remote Server returned '550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found'", HARD),
    (None, "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuota",
     SOFT),
    (None, "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DB5EUR03FT012.eop-EUR03.prod]",
     HARD),
    (None, "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your Internet "
           "service provider since part of their network is on our block list (S3150).", BLOCKED),
    (None, "550 5.7.606 Access denied, banned sending IP [192.0.2.10]. To request removal from this list "
           "please visit https://sender.office.com/", BLOCKED),
    (None, "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", BLOCKED),
    (None, "452 4.3.1 Insufficient system resources", SOFT),
    (None, "451 4.4.0 DNS query failed", SOFT),
    (None, "550 5.7.350 Remote server returned message detected as spam -> 554 5.7.1 Message rejected", SOFT),
    # --- Gmail ---
    (None, "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking "
           "the recipient's email address for typos or unnecessary spaces. For more information, go to "
           "https://support.google.com/mail/?p=NoSuchUser", HARD),
    (None, "552-5.2.2 The recipient's inbox is out of storage space and inactive. Please direct the recipient "
           "to https://support.google.com/mail/?p=OverQuotaPerm", SOFT),
    (None, "421-4.7.0 [192.0.2.10] Our system has detected an unusual rate of unsolicited mail originating "
           "from your IP address. To protect our users from spam, mail sent from your IP address has been "
           "temporarily rate limited.", SOFT),
    (None, "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users, "
           "and has been blocked. The sender must authenticate with at least one of SPF or DKIM.", BLOCKED),
    (None, "550-5.7.1 [192.0.2.10] The IP you're using to send mail is not authorized to send email directly "
           "to our servers. Please use the SMTP relay at your service provider instead.", BLOCKED),
    (None, "550-5.2.1 The email account that you tried to reach is disabled.", HARD),
    (None, "550-5.7.1 [192.0.2.10] Gmail has detected that this message is likely suspicious due to the very "
           "low reputation of the sending domain.", BLOCKED),
    # --- Yahoo / AOL ---
    (None, "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or user "
           "complaints - 4.16.55.1; see https://senders.yahooinc.com/error-codes", SOFT),
    (None, "554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - "
           "mta1234.mail.bf1.yahoo.com", HARD),
    (None, "554 5.7.9 Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
     SOFT),
    (None, "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.10, because the ip is in "
           "Spamhaus's list; see https://senders.yahooinc.com/error-codes", BLOCKED),
    # --- generic ---
    (None, "550 5.7.1 Message rejected as spam by Content Filtering.", SOFT),
    (None, "550 Requested action not taken: mailbox unavailable", HARD),
    (None, "554 5.4.6 Hop count exceeded - possible mail loop", HARD),
    (None, "550 5.1.2 Host unknown (Name server: mx.example.invalid: host not found)", HARD),
    (None, "451 Temporary local problem - please try later", SOFT),
    (None, "550 5.7.1 Sender rejected: domain reputation too low", BLOCKED),
]


def test_there_are_at_least_thirty_realistic_cases() -> None:
    assert len(CASES) >= 30
    assert {expected for _, _, expected in CASES} == {HARD, SOFT, BLOCKED}


@pytest.mark.parametrize(("status", "diagnostic", "expected"), CASES,
                         ids=[f"{i:02d}-{d[:40]}" for i, (_, d, _) in enumerate(CASES)])
def test_classify_realistic_diagnostics(status: str | None, diagnostic: str, expected: Response) -> None:
    assert classify_status(status, diagnostic) is expected


@pytest.mark.parametrize(("status", "expected"), [
    ("5.1.1", HARD), ("5.1.2", HARD), ("5.1.10", HARD), ("5.0.0", HARD), ("5.4.4", HARD),
    ("4.4.7", SOFT), ("4.2.2", SOFT), ("4.7.1", SOFT), ("4.0.0", SOFT),
    ("5.2.2", SOFT),  # mailbox full
    ("5.7.1", BLOCKED),  # about the sender, without further words
    ("550", HARD), ("421", SOFT), ("452", SOFT),
])
def test_status_alone(status: str, expected: Response) -> None:
    assert classify_status(status) is expected


def test_the_status_field_wins_over_codes_quoted_in_the_text() -> None:
    assert classify_status("4.2.2", "550 5.1.1 user unknown (earlier attempt)") is SOFT
    assert classify_status("5.1.1", "452 4.2.2 mailbox full (earlier attempt)") is SOFT  # mailbox full words


@pytest.mark.parametrize(("text", "code"), [
    ("550 5.1.1 user unknown", "5.1.1"),
    ("550-5.7.26 unauthenticated", "5.7.26"),
    ("#5.1.10 smtp;550", "5.1.10"),
    ("452 4.2.2 mailbox full", "4.2.2"),
    ("host mx.example.net [64.4.22.10]: 550 5.1.1 user unknown", "5.1.1"),  # not the IP address
    ("client [40.5.6.7] rejected", None),
    ("550 user unknown", None),
])
def test_enhanced_code(text: str, code: str | None) -> None:
    assert enhanced_code(text) == code

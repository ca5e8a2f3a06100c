"""The bounce classifier: a reason per failure, and hard only for a permanently bad address.

RFC 3463 enhanced status codes, RFC 5321/7504 reply codes and the wording of common MTAs and
providers. Hard bounce: the address itself is bad (user or host unknown, moved, null MX). Blocked:
a refusal aimed at the sender, the content or the sending IP. Soft bounce: anything temporary or
undetermined (mailbox full, expired, rate limited, system or network trouble).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.bounces import (
    Reason,
    Verdict,
    classify,
    classify_reply,
    classify_status,
    enhanced_code,
    smtp_stage,
)
from app.domain.responses import Response

HARD, SOFT, BLOCKED = Response.HARD_BOUNCE, Response.SOFT_BOUNCE, Response.BLOCKED
R = Reason

# (DSN Status field or None, the server's words, expected reason, expected response)
CASES: list[tuple[str | None, str, Reason, Response]] = [
    # --- Postfix ("said: ... (in reply to RCPT TO command)", DSN "smtp; ...") ---
    ("5.1.1", "smtp; 550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown in "
              "virtual mailbox table", R.USER_UNKNOWN, HARD),
    (None, "host mx.example.com[203.0.113.7] said: 550 5.1.1 <jane@example.com>: Recipient address "
           "rejected: User unknown in local recipient table (in reply to RCPT TO command)",
     R.USER_UNKNOWN, HARD),
    ("5.4.4", "Host or domain name not found. Name service error for name=exmaple.com type=A: "
              "Host not found", R.HOST_UNKNOWN, HARD),
    ("5.4.4", "Host or domain name not found. Name service error for name=example.com type=MX: "
              "Host not found, try again", R.NETWORK_ERROR, SOFT),
    ("4.4.1", "connect to mx.example.org[198.51.100.7]:25: Connection timed out",
     R.NETWORK_ERROR, SOFT),
    (None, "host mx.example.com[203.0.113.7] said: 452 4.2.2 Mailbox full (in reply to RCPT TO "
           "command)", R.MAILBOX_FULL, SOFT),
    (None, "host mx.example.com[203.0.113.7] said: 554 5.7.1 Service unavailable; Client host "
           "[192.0.2.10] blocked using zen.spamhaus.org", R.BLOCKED, BLOCKED),
    (None, "host mx.example.com[203.0.113.7] said: 450 4.7.1 <jane@example.com>: Recipient "
           "address rejected: Greylisted, see http://postgrey.example.org/", R.RATE_LIMITED, SOFT),
    ("5.0.0", "smtp; 554 Rejected: 192.0.2.10 listed at zen.spamhaus.org", R.BLOCKED, BLOCKED),
    # A user unknown after the message was sent is a filter's answer, not a missing mailbox.
    (None, "host mx.example.jp[203.0.113.8] said: 550 Unknown user ann@example.jp (in reply to "
           "end of DATA command)", R.FILTERED, BLOCKED),
    # The local delivery program failed: the system, not the address.
    ("5.1.1", "procmail: Couldn't create \"/var/spool/mail/ann\"", R.SYSTEM_ERROR, SOFT),
    # --- Exim ---
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 550 No such user "
           "here", R.USER_UNKNOWN, HARD),
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 421 Service not "
           "available, closing transmission channel", R.SYSTEM_ERROR, SOFT),
    (None, "SMTP error from remote mail server after MAIL FROM:<bounce@sender.example> SIZE=4020: "
           "550 rejected because 192.0.2.10 is in a black list at zen.spamhaus.org",
     R.BLOCKED, BLOCKED),
    (None, "SMTP error from remote mail server after MAIL FROM:<bounce@sender.example>: 550 5.1.8 "
           "Domain of sender address bounce@sender.example does not exist", R.SENDER, BLOCKED),
    (None, "SMTP error from remote mail server after RCPT TO:<bob@example.net>: 552 Mailbox is full",
     R.MAILBOX_FULL, SOFT),
    (None, "retry timeout exceeded", R.EXPIRED, SOFT),
    (None, "all hosts for 'example.net' have been failing for a long time (and retry time not "
           "reached)", R.EXPIRED, SOFT),
    (None, "an MX or SRV record indicated no SMTP service", R.NOT_ACCEPTING, HARD),
    # --- qmail ---
    (None, "203.0.113.25 does not like recipient. Remote host said: 550 sorry, no mailbox here by "
           "that name. (#5.1.1)", R.USER_UNKNOWN, HARD),
    (None, "Connected to 203.0.113.25 but sender was rejected. Remote host said: 553 sorry, your "
           "envelope sender domain must exist (#5.7.1)", R.SENDER, BLOCKED),
    # --- Microsoft ---
    (None, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     R.USER_UNKNOWN, HARD),
    (None, "Remote Server returned '550 5.1.1 RESOLVER.ADR.ExRecipNotFound; not found'",
     R.USER_UNKNOWN, HARD),
    (None, "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
     R.MAILBOX_FULL, SOFT),
    (None, "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
     R.USER_UNKNOWN, HARD),
    (None, "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your "
           "Internet service provider since part of their network is on our block list (S3150).",
     R.BLOCKED, BLOCKED),
    (None, "550 5.7.606 Access denied, banned sending IP [192.0.2.10].", R.BLOCKED, BLOCKED),
    (None, "452 4.3.1 Insufficient system resources", R.SYSTEM_ERROR, SOFT),
    (None, "550 5.7.350 Remote server returned message detected as spam -> 554 5.7.1 Message "
           "rejected", R.FILTERED, BLOCKED),
    # --- Gmail ---
    (None, "550-5.1.1 The email account that you tried to reach does not exist. Please try "
           "double-checking the recipient's email address for typos", R.USER_UNKNOWN, HARD),
    (None, "552-5.2.2 The recipient's inbox is out of storage space and inactive.",
     R.MAILBOX_FULL, SOFT),
    # A temporary refusal (4xx) may pass later: soft, whatever it is about.
    (None, "421-4.7.0 [192.0.2.10] Our system has detected an unusual rate of unsolicited mail "
           "originating from your IP address.", R.FILTERED, SOFT),
    (None, "451 4.3.0 Mail server temporarily rejected message.", R.POLICY, SOFT),
    (None, "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and "
           "Gmail users, and has been blocked. The sender must authenticate with at least one of "
           "SPF or DKIM.", R.SENDER, BLOCKED),
    ("5.0.0", "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
              "DMARC policy.", R.SENDER, BLOCKED),
    (None, "550-5.2.1 The email account that you tried to reach is disabled.", R.SUSPENDED, SOFT),
    (None, "550-5.7.1 [192.0.2.10] Gmail has detected that this message is likely suspicious due to "
           "the very low reputation of the sending domain.", R.BLOCKED, BLOCKED),
    # --- Yahoo ---
    (None, "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected "
           "volume or user complaints", R.RATE_LIMITED, SOFT),
    (None, "host mta5.am0.yahoodns.net[203.0.113.4] said: 554 delivery error: dd This user "
           "doesn't have a yahoo.com account (bob@yahoo.com) [0] (in reply to RCPT TO command)",
     R.USER_UNKNOWN, HARD),
    (None, "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.10, because the ip is "
           "in Spamhaus's list", R.BLOCKED, BLOCKED),
    # --- generic wording and codes ---
    (None, "550 5.7.1 Message rejected as spam by Content Filtering.", R.FILTERED, BLOCKED),
    (None, "554 5.4.6 Hop count exceeded - possible mail loop", R.NETWORK_ERROR, SOFT),
    (None, "550 5.1.2 Host unknown (Name server: mx.example.invalid: host not found)",
     R.HOST_UNKNOWN, HARD),
    (None, "451 Temporary local problem - please try later", R.SYSTEM_ERROR, SOFT),
    (None, "550 5.7.1 Sender rejected: domain reputation too low", R.SENDER, BLOCKED),
    (None, "552 5.3.4 Message size exceeds fixed limit", R.TOO_LARGE, BLOCKED),
    (None, "550 5.1.6 Recipient no longer available at this address", R.HAS_MOVED, HARD),
    (None, "521 5.3.2 mx.example.org does not accept mail", R.NOT_ACCEPTING, HARD),
    (None, "554 5.7.1 <ann@example.org>: Relay access denied", R.POLICY, BLOCKED),
    (None, "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
     R.POLICY, BLOCKED),
    # Postfix names what it refused: our HELO name, not the recipient's host.
    (None, "554 5.7.1 <unknown[192.0.2.1]>: Helo command rejected: Host not found (in reply to "
           "RCPT TO command)", R.BLOCKED, BLOCKED),
    (None, "554 5.7.1 This message has been blocked because it contains a banned attachment",
     R.FILTERED, BLOCKED),
    # An access rule refusing the recipient address at RCPT TO: that address takes no mail.
    (None, "554 5.7.1 <ann@example.org>: Recipient address rejected: Access denied (in reply to "
           "RCPT TO command)", R.USER_UNKNOWN, HARD),
    # A bare "user unknown" with neither an address status nor RCPT TO: not proof enough.
    ("5.0.0", "550 User unknown", R.USER_UNKNOWN, SOFT),
    # RFC 5321's generic 550 text names no cause.
    (None, "550 Requested action not taken: mailbox unavailable", R.USER_UNKNOWN, SOFT),
    ("5.0.0", "", R.UNDEFINED, SOFT),
    # --- wording from more MTAs and languages ---
    # SMTP32-style reports name the command in their own words.
    (None, "Unknown user: ann@example.net RCPT TO generated following response: 553 5.3.0 "
           "<ann@example.net>... Addressee unknown", R.USER_UNKNOWN, HARD),
    (None, "SMTP error from remote mail server after RCPT TO:<ann@example.net>: 550 BAD_RECIPIENT",
     R.USER_UNKNOWN, HARD),
    (None, "SMTP error from remote mail server after RCPT TO:<ann@example.net>: 550 "
           "ann@example.net is not an active address at this host", R.USER_UNKNOWN, HARD),
    ("5.0.0", "550 ann@example.net is not an active address at this host", R.USER_UNKNOWN, SOFT),
    (None, "SMTP error from remote mail server after RCPT TO:<ana@example.es>: 550 "
           "<ana@example.es>: Usuario desconocido", R.USER_UNKNOWN, HARD),
    ("5.0.0", "550 Destinataire inconnu", R.USER_UNKNOWN, SOFT),
    (None, "host mx.example.de[203.0.113.9] said: 550 Empfaenger existiert nicht (in reply to RCPT "
           "TO command)", R.USER_UNKNOWN, HARD),
    (None, "550 5.1.2 Le domaine example.fr n'existe pas", R.HOST_UNKNOWN, HARD),
    # "Unknown or full": the server does not say which; the address may be good.
    (None, "SMTP error from remote mail server after RCPT TO:<ana@example.es>: 550 "
           "<ana@example.es>: Destinatario desconocido o mailbox lleno", R.MAILBOX_FULL, SOFT),
    (None, "host mx.example.com[203.0.113.7] said: 550 User unknown or mailbox full (in reply to "
           "RCPT TO command)", R.MAILBOX_FULL, SOFT),
    (None, "<ana@example.ar>: Mailbox quota usage exceeded. Espacio en casilla de mail agotado.",
     R.MAILBOX_FULL, SOFT),
    (None, "550 Postfach voll", R.MAILBOX_FULL, SOFT),
    (None, "maildir delivery failed: Sorry, the user's maildir has overdrawn his diskspace quota, "
           "please try again later.", R.MAILBOX_FULL, SOFT),
    (None, "552 Account(s) <ann@example.net> does not have enough space", R.MAILBOX_FULL, SOFT),
    # A directory's answer after DATA still names a missing mailbox ...
    (None, "host mxs.example.ru[203.0.113.5] said: 550 Message was not accepted -- invalid "
           "mailbox. Local mailbox ann@example.ru is unavailable: user not found (in reply to end "
           "of DATA command)", R.USER_UNKNOWN, HARD),
    # ... but not a disabled one.
    (None, "host mxs.example.ru[203.0.113.5] said: 550 Message was not accepted -- invalid "
           "mailbox. Local mailbox ann@example.ru is unavailable: account is disabled (in reply "
           "to end of DATA command)", R.SUSPENDED, SOFT),
    # Postfix's own local delivery agent knows its users.
    ("5.0.0", "X-Postfix; unknown user: \"ann\"", R.USER_UNKNOWN, HARD),
    (None, "host mx.example.com[203.0.113.7] said: 554 RCPT (ann@example.com) dosn't exist (in "
           "reply to RCPT TO command)", R.USER_UNKNOWN, HARD),
    # An address that was valid once and is no more.
    (None, "ann@example.it: this email address is wrong or no longer valid", R.HAS_MOVED, HARD),
    (None, "550 5.1.1 <ann@example.org>: the address is not in use anymore (in reply to RCPT TO "
           "command)", R.HAS_MOVED, HARD),
    (None, "<ann@example.invalid>: Sorry, I couldn't find any host by that name.",
     R.HOST_UNKNOWN, HARD),
    (None, "550 [SUSPEND] Mailbox currently suspended - Please contact correspondent directly",
     R.SUSPENDED, SOFT),
    ("5.1.1", "550 [SUSPEND] Mailbox currently suspended", R.SUSPENDED, SOFT),
    # "Not accepting mail" from us or with attachments: the sender or the content, not the domain.
    (None, "Your mail to the following recipients could not be delivered because they are not "
           "accepting mail from news@example.com: ann", R.SENDER, BLOCKED),
    (None, "Your mail to the following recipients could not be delivered because they are not "
           "accepting mail with attachments or embedded images: ann", R.FILTERED, BLOCKED),
    (None, "550 5.1.10 example.org does not accept mail (nullMX)", R.NOT_ACCEPTING, HARD),
    (None, "User mailbox exceeds allowed size: ann@example.org", R.MAILBOX_FULL, SOFT),
    (None, "550 <ann@example.de> User has too many messages on the server.", R.MAILBOX_FULL, SOFT),
    # No connection at all is the network, not a refusal.
    (None, "<ann@example.org>: connect to mx.example.org[192.0.2.4]:25: Connection refused",
     R.NETWORK_ERROR, SOFT),
    (None, "450 User is receiving mail too quickly (in reply to RCPT TO command)",
     R.RATE_LIMITED, SOFT),
    # A server that takes no mail for that domain, or not now, says nothing of the domain itself.
    (None, "550 5.7.1 This server does not accept mail for example.org", R.POLICY, BLOCKED),
    (None, "554 example.org: not accepting mail at this time", R.UNDEFINED, SOFT),
    (None, "mail for mx.example.org loops back to myself", R.NETWORK_ERROR, SOFT),
    # RFC 7504's 521/556 name a host taking no mail, unless the code or words say otherwise.
    (None, "521 5.3.2 <ann@example.org>: Recipient address rejected: System not accepting network "
           "messages", R.NOT_ACCEPTING, HARD),
    (None, "521 5.7.1 Connection from 192.0.2.1 refused by policy", R.POLICY, BLOCKED),
    (None, "521-5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.example.net",
     R.BLOCKED, BLOCKED),
    # Our own host name or IP that cannot be resolved is about us, not the recipient's domain.
    (None, "550 5.7.1 Could not resolve your hostname [192.0.2.1]", R.BLOCKED, BLOCKED),
    ("5.0.0", "550 Sender address is no longer valid", R.SENDER, BLOCKED),
    ("5.0.0", "550 Le domaine de l'expediteur n'existe pas", R.SENDER, BLOCKED),
    ("5.0.0", "550 Absenderadresse unbekannt", R.SENDER, BLOCKED),
    # Words inside an address name no cause: "grube" is no UBE, "hurley" no URL.
    (None, "Could not initiate SMTP conversation with any hosts: [mx.example.net (1): Connection "
           "dropped] for ann.grube@example.net", R.NETWORK_ERROR, SOFT),
    ("5.0.0", "<spam-desk@example.net>: delivery failed: retry timeout exceeded", R.EXPIRED, SOFT),
]


def test_there_are_many_realistic_cases() -> None:
    assert len(CASES) >= 45
    assert {response for *_, response in CASES} == {HARD, SOFT, BLOCKED}


@pytest.mark.parametrize(("status", "diagnostic", "reason", "response"), CASES,
                         ids=[f"{i:02d}-{c[1][:40]}" for i, c in enumerate(CASES)])
def test_classify_realistic_diagnostics(status: str | None, diagnostic: str, reason: Reason,
                                        response: Response) -> None:
    verdict = classify(status, diagnostic, action="failed")
    assert (verdict.reason, verdict.response) == (reason, response)
    assert verdict.permanent is (response is HARD)
    assert classify_status(status, diagnostic) is response


@pytest.mark.parametrize(("status", "reason", "response"), [
    ("5.1.1", R.USER_UNKNOWN, HARD), ("5.1.2", R.HOST_UNKNOWN, HARD),
    ("5.1.10", R.NOT_ACCEPTING, HARD), ("5.1.6", R.HAS_MOVED, HARD),
    ("5.4.4", R.HOST_UNKNOWN, HARD), ("5.7.17", R.HAS_MOVED, HARD),
    ("4.1.1", R.USER_UNKNOWN, SOFT),  # temporary by its class
    ("4.4.7", R.EXPIRED, SOFT), ("4.2.2", R.MAILBOX_FULL, SOFT), ("5.2.2", R.MAILBOX_FULL, SOFT),
    ("5.2.1", R.SUSPENDED, SOFT), ("5.3.4", R.TOO_LARGE, BLOCKED),
    ("5.7.1", R.POLICY, BLOCKED), ("5.7.23", R.SENDER, BLOCKED), ("5.7.25", R.BLOCKED, BLOCKED),
    ("5.0.0", R.UNDEFINED, SOFT), ("550", R.UNDEFINED, SOFT), ("421", R.UNDEFINED, SOFT),
])
def test_status_alone(status: str, reason: Reason, response: Response) -> None:
    verdict = classify(status, action="failed")
    assert (verdict.reason, verdict.response) == (reason, response)


def test_the_remote_servers_code_is_more_specific_than_a_generic_status_field() -> None:
    assert classify("5.0.0", "550 5.1.1 <a@example.org>: user unknown").status == "5.1.1"
    assert classify("5.1.1", "550 5.0.0 <a@example.org>... User unknown").status == "5.1.1"
    # A specific code in the text names the failure even under another specific field.
    verdict = classify("5.1.1", "550 5.7.1 rejected: client host blocked using bl.example.net")
    assert (verdict.reason, verdict.response) == (R.BLOCKED, BLOCKED)


@pytest.mark.parametrize(("text", "stage"), [
    ("said: 550 x (in reply to RCPT TO command)", "RCPT"),
    ("said: 550 x (in reply to\n    end of DATA command)", "DATA"),
    ("SMTP error from remote mail server after MAIL FROM:<a@b.c>: 550 x", "MAIL"),
    ("SMTP error from remote mail server after initial connection: 554 x", "CONNECT"),
    (">>> RCPT To:<a@b.c>\n<<< 550 5.1.1 unknown", "RCPT"),
    # Pipelined, the reply to RCPT TO may follow ">>> DATA": read cautiously, as DATA's.
    (">>> DATA\n<<< 550 5.1.1 <a@b.c>... User unknown\n<<< 554 5.5.1 no valid recipients", "DATA"),
    (">>> DATA\n<<< 550 Unknown user a@b.c", "DATA"),
    ("203.0.113.2 does not like recipient.", "RCPT"),
    ("550 user unknown", None),
    ("RCPT TO generated following response: 550 no such user", "RCPT"),
])
def test_smtp_stage(text: str, stage: str | None) -> None:
    assert smtp_stage(text) == stage


def test_a_refusal_before_any_recipient_is_about_the_sender() -> None:
    verdict = classify(None, "SMTP error from remote mail server after MAIL FROM:<a@b.c>: "
                             "553 5.1.1 unknown user")
    assert (verdict.reason, verdict.permanent) == (R.SENDER, False)


def test_delivered_and_delayed_actions() -> None:
    assert classify("2.0.0", "250 ok", action="delivered").response is None
    delayed = classify("4.2.2", "452 4.2.2 mailbox full", action="delayed")
    assert delayed.delayed and not delayed.is_failure and not delayed.permanent
    assert classify("5.1.1", "550 5.1.1 no such user", action="delayed").permanent is False


@pytest.mark.parametrize(("code", "text", "reason", "response"), [
    (550, "5.1.1 <a@example.org>: Recipient address rejected: User unknown in local recipient "
          "table", R.USER_UNKNOWN, HARD),
    (554, "5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org",
     R.BLOCKED, BLOCKED),
    (552, "5.2.2 Mailbox full", R.MAILBOX_FULL, SOFT),
    (550, "Requested action not taken", R.UNDEFINED, SOFT),
])
def test_the_reply_at_hand_off(code: int, text: str, reason: Reason, response: Response) -> None:
    verdict = classify_reply(code, text)
    assert (verdict.reason, verdict.response, verdict.reply) == (reason, response, str(code))


def test_verdict_is_a_frozen_value() -> None:
    verdict = Verdict(R.MAILBOX_FULL, status="5.2.2")
    with pytest.raises(AttributeError):
        verdict.permanent = True  # type: ignore[misc]
    assert verdict.detail() == {"reason": "mailbox_full", "permanent": False, "status": "5.2.2"}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=30)), st.text(max_size=400),
       st.one_of(st.none(), st.sampled_from(["failed", "delayed", "delivered", "x"])))
def test_classify_never_raises(status: str | None, diagnostic: str, action: str | None) -> None:
    verdict = classify(status, diagnostic, action=action)
    assert isinstance(verdict.reason, Reason)
    assert not verdict.permanent or verdict.response is HARD


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

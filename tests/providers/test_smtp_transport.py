"""SmtpTransport against a real SMTP server, with and without PIPELINING (RFC 2920).

The pipelined dialogue must give the same outcomes and put the same bytes on the wire as the
step-by-step one, and never send a body before the caller's hand-off record is written.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.providers.smtp import (
    ConnectionLost,
    Outcome,
    SmtpSettings,
    SmtpTransport,
    _dot_terminated,
    _quoteaddr,
)
from tests.smtp_server import Handler, SmtpServer

MESSAGE = (
    b"From: news@shop.example\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\n"
    b"Hello\r\n.leading dot\r\n..two dots\r\nlast line without CRLF"
)


@dataclass
class PipeliningHandler(Handler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def _server(pipelining: bool) -> SmtpServer:
    server = SmtpServer()
    if pipelining:
        server.handler = PipeliningHandler()
    return server.start()


@pytest.fixture(params=[True, False], ids=["pipelining", "step-by-step"])
def server(request):
    s = _server(request.param)
    yield s
    s.stop()


def transport(server: SmtpServer) -> SmtpTransport:
    return SmtpTransport(SmtpSettings("127.0.0.1", server.port, timeout=5))


def test_server_announcement_selects_the_dialogue(server) -> None:
    t = transport(server)
    t.open()
    assert t.pipelining is isinstance(server.handler, PipeliningHandler)
    t.close()


def test_same_bytes_arrive_either_way() -> None:
    received = []
    for pipelining in (True, False):
        s = _server(pipelining)
        t = transport(s)
        result = t.send("bounce+tok.en@bounces.example", "a@example.org", MESSAGE)
        t.close()
        s.stop()
        assert result.outcome is Outcome.ACCEPTED and result.code == 250
        (msg,) = s.handler.messages
        assert msg.mail_from == "bounce+tok.en@bounces.example"
        assert msg.rcpt == ["a@example.org"]
        received.append(msg.data)
    assert received[0] == received[1]


def test_refused_recipient_then_the_connection_goes_on(server) -> None:
    server.handler.refuse["gone@example.org"] = "550 5.1.1 No such user"
    t = transport(server)
    refused = t.send("b@example.org", "gone@example.org", MESSAGE)
    assert refused.outcome is Outcome.REFUSED_PERMANENT
    assert (refused.code, refused.text) == (550, "5.1.1 No such user")
    transient_refusal = "451 4.3.0 Try later"
    server.handler.refuse["later@example.org"] = transient_refusal
    assert t.send("b@example.org", "later@example.org", MESSAGE).outcome is (
        Outcome.REFUSED_TRANSIENT)
    assert t.send("b@example.org", "ok@example.org", MESSAGE).outcome is Outcome.ACCEPTED
    assert [m.rcpt for m in server.handler.messages] == [["ok@example.org"]]
    t.close()


def test_closing_reply_refuses_for_now_and_reconnects(server) -> None:
    server.handler.refuse["x@example.org"] = "421 4.3.2 Shutting down"
    t = transport(server)
    result = t.send("b@example.org", "x@example.org", MESSAGE)
    assert (result.outcome, result.code) == (Outcome.REFUSED_TRANSIENT, 421)
    assert t.conn is None
    assert t.send("b@example.org", "ok@example.org", MESSAGE).outcome is Outcome.ACCEPTED
    assert [m.rcpt for m in server.handler.messages] == [["ok@example.org"]]


def test_lost_server_before_data_is_not_ambiguous(server) -> None:
    t = transport(server)
    t.open()
    server.stop()
    with pytest.raises(ConnectionLost) as info:
        t.send("b@example.org", "a@example.org", MESSAGE)
    assert not info.value.ambiguous


@pytest.mark.parametrize("address", [
    "a@example.org", "bounce+MQ.abc-_Z9@bounces.sendboard.local", "o'brien@example.org",
    "first.last@sub.example.co.uk", "weird..dots@example.org", ".lead@example.org",
    "Name <a@example.org>", "<a@example.org>", "", "<>", "no-at-sign", "a@b@c",
    "quoted\"local@example.org", "ünï@example.org", "a@[127.0.0.1]", "trail.@example.org",
])
def test_quoteaddr_matches_smtplib(address: str) -> None:
    assert _quoteaddr(address) == smtplib.quoteaddr(address)


@pytest.mark.parametrize("data", [
    b"", b".", b"a", b"a\r\n", b".a\r\n.b", b"x\r\n.\r\ny", b"x\n.y", b"x\r.y", b"..\r\n",
])
def test_body_on_the_wire_matches_smtplib(data: bytes) -> None:
    q = smtplib._quote_periods(data)
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    assert _dot_terminated(data) == q + b".\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"a", b"\r\n."]), max_size=30).map(b"".join))
def test_any_body_on_the_wire_matches_smtplib(data: bytes) -> None:
    q = smtplib._quote_periods(data)
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    assert _dot_terminated(data) == q + b".\r\n"


def test_hand_off_record_is_written_before_the_body_leaves(server) -> None:
    t = transport(server)
    seen_at_record: list[int] = []

    def record() -> None:
        seen_at_record.append(len(server.handler.messages))

    result = t.send("b@example.org", "a@example.org", MESSAGE, before_body=record)
    assert result.outcome is Outcome.ACCEPTED
    assert seen_at_record == [0]  # called once, and nothing had arrived yet
    assert len(server.handler.messages) == 1
    t.close()


def test_failing_hand_off_record_sends_nothing(server) -> None:
    t = transport(server)

    def record() -> None:
        raise RuntimeError("Redis is gone")

    with pytest.raises(RuntimeError, match="Redis is gone"):
        t.send("b@example.org", "a@example.org", MESSAGE, before_body=record)
    assert t.conn is None  # dropped without a body
    # The next message opens a new connection; the first one never arrived.
    assert t.send("b@example.org", "ok@example.org", MESSAGE).outcome is Outcome.ACCEPTED
    t.close()
    assert [m.rcpt for m in server.handler.messages] == [["ok@example.org"]]


def test_refused_recipient_never_gets_a_body_whatever_the_record(server) -> None:
    server.handler.refuse["gone@example.org"] = "550 5.1.1 No such user"
    t = transport(server)
    calls: list[str] = []
    result = t.send("b@example.org", "gone@example.org", MESSAGE,
                    before_body=lambda: calls.append("record"))
    assert result.outcome is Outcome.REFUSED_PERMANENT
    # Pipelined, the record is written while the envelope is read; step by step, the refusal
    # comes first and nothing needs recording. Either way no body was sent.
    assert calls == (["record"] if t.pipelining else [])
    assert server.handler.messages == []
    t.close()

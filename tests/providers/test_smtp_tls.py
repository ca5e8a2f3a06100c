"""Sending through a TLS relay: STARTTLS (587) and implicit TLS (465) with a login.

Real aiosmtpd servers with certificates from a throwaway CA made in the test. The relay's
certificate is checked (against SMTP_CA_FILE for a private CA) and must name the host we connect
to; the password only ever travels encrypted; a relay that cannot be used safely is a clear
connection failure. Through the sending engine such a failure is retried, then interrupts the
mailing with the reason, and nobody is recorded as sent.
"""

from __future__ import annotations

import logging
import smtplib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import Config, check_config
from app.domain.lifecycle import Status
from app.extensions import db
from app.models import Provider
from app.providers.smtp import ConnectionLost, Outcome, SmtpSettings, SmtpTransport
from app.services import mailings, sending, totals
from tests.factories import make_audience, make_mailing, responses_of, run_worker
from tests.smtp_server import Handler, Login, SmtpServer, TlsFiles, make_certificates

USER, PASSWORD = "sendboard", "relay secret"
SENDER, RECIPIENT = "bounce+tok.en@bounces.example", "a@example.org"
# A dot at a line start (dot-stuffed on the wire) and 8-bit text: must arrive byte for byte.
MESSAGE = (
    b"From: news@shop.example\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\n"
    b"Hello\r\n.leading dot\r\nna\xc3\xafve caf\xc3\xa9\r\n"
)


@dataclass(frozen=True)
class Certificates:
    trusted: TlsFiles  # issued by a private CA for localhost and 127.0.0.1
    self_signed: TlsFiles  # for localhost and 127.0.0.1, signed by itself
    localhost_only: TlsFiles  # issued by a private CA for the name localhost only


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    root = tmp_path_factory.mktemp("tls")
    return Certificates(
        trusted=make_certificates(root / "trusted"),
        self_signed=make_certificates(root / "self-signed", self_signed=True),
        localhost_only=make_certificates(root / "localhost-only", names=("localhost",)),
    )


@dataclass
class PipeliningHandler(Handler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def starttls_server(tls: TlsFiles, *, handler: Handler | None = None, **options) -> SmtpServer:
    """A submission relay (587): STARTTLS required before anything else, AUTH after it."""
    handler = handler or Handler()
    handler.users[USER] = PASSWORD
    return SmtpServer(handler=handler, tls_context=tls.server_context(), require_starttls=True,
                      **options)


def smtps_server(tls: TlsFiles, **options) -> SmtpServer:
    """An SMTPS relay (465): TLS from the first byte. (aiosmtpd only counts STARTTLS as
    encryption for AUTH, hence auth_require_tls=False; the handler records that it was TLS.)"""
    return SmtpServer(handler=Handler(users={USER: PASSWORD}), ssl_context=tls.server_context(),
                      auth_require_tls=False, **options)


@pytest.fixture
def serve():
    """Start servers for one test; all are stopped at its end."""
    started: list[SmtpServer] = []

    def start(server: SmtpServer) -> SmtpServer:
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def relay(server: SmtpServer, security: str, *, host: str = "127.0.0.1", password: str = PASSWORD,
          **settings) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host, server.port, security, USER, password, timeout=5,
                                      **settings))


def refused(transport: SmtpTransport) -> str:
    """Try to send; the connection must fail before anything could have been accepted."""
    with pytest.raises(ConnectionLost) as caught:
        transport.send(SENDER, RECIPIENT, MESSAGE)
    assert caught.value.ambiguous is False
    assert transport.conn is None
    return str(caught.value)


# ---------------------------------------------------------------- the transport


@pytest.mark.parametrize("pipelining", [False, True], ids=["step-by-step", "pipelining"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_relay_with_login(serve, certs, mechanism, pipelining) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    handler = PipeliningHandler() if pipelining else Handler()
    server = serve(starttls_server(certs.trusted, handler=handler,
                                   auth_exclude_mechanism=[other]))
    t = relay(server, "starttls", ca_file=str(certs.trusted.ca_file))
    result = t.send(SENDER, RECIPIENT, MESSAGE)
    assert t.pipelining is pipelining  # read from the EHLO after TLS
    t.close()
    assert result.outcome is Outcome.ACCEPTED and result.code == 250
    # EHLO in plain text, STARTTLS, EHLO again encrypted, then the login, then the message.
    assert server.handler.ehlos == [False, True]
    assert server.handler.logins == [Login(mechanism, USER, tls=True, accepted=True)]
    (received,) = server.handler.messages
    assert received.tls and received.mail_from == SENDER and received.rcpt == [RECIPIENT]
    assert received.data == MESSAGE


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_implicit_tls_relay_with_login(serve, certs, mechanism) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    server = serve(smtps_server(certs.trusted, auth_exclude_mechanism=[other]))
    t = relay(server, "ssl", ca_file=str(certs.trusted.ca_file))
    first = t.send(SENDER, RECIPIENT, MESSAGE)
    second = t.send(SENDER, "b@example.org", MESSAGE)  # the same connection, still logged in
    t.close()
    assert first.outcome is second.outcome is Outcome.ACCEPTED
    assert server.handler.ehlos == [True]  # encrypted from the first command
    assert server.handler.logins == [Login(mechanism, USER, tls=True, accepted=True)]
    assert [(m.rcpt, m.tls, m.data) for m in server.handler.messages] == [
        ([RECIPIENT], True, MESSAGE), (["b@example.org"], True, MESSAGE)]


@pytest.mark.parametrize("security", ["starttls", "ssl"])
@pytest.mark.parametrize("kind, reason", [
    ("self_signed", "self-signed certificate"),
    ("trusted", "unable to get local issuer certificate"),  # its CA is not trusted here
])
def test_unverifiable_certificate_is_refused_before_the_login(serve, certs, security, kind,
                                                              reason) -> None:
    tls = getattr(certs, kind)
    server = serve(starttls_server(tls) if security == "starttls" else smtps_server(tls))
    message = refused(relay(server, security))  # verification on: the default
    assert "TLS certificate could not be verified" in message and reason in message
    assert "SMTP_CA_FILE" in message
    assert server.handler.logins == [] and server.handler.messages == []
    assert server.handler.ehlos == ([False] if security == "starttls" else [])


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_certificate_must_name_the_host_connected_to(serve, certs, security) -> None:
    tls = certs.localhost_only
    server = serve(starttls_server(tls) if security == "starttls" else smtps_server(tls))
    by_address = relay(server, security, host="127.0.0.1", ca_file=str(tls.ca_file))
    message = refused(by_address)
    assert "could not be verified" in message and "does not name '127.0.0.1'" in message
    assert server.handler.logins == []
    by_name = relay(server, security, host="localhost", ca_file=str(tls.ca_file))
    assert by_name.send(SENDER, RECIPIENT, MESSAGE).outcome is Outcome.ACCEPTED
    by_name.close()
    assert [m.tls for m in server.handler.messages] == [True]


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_verification_off_accepts_any_certificate_and_says_so(serve, certs, security,
                                                              caplog) -> None:
    tls = certs.self_signed
    server = serve(starttls_server(tls) if security == "starttls" else smtps_server(tls))
    t = relay(server, security, verify=False)
    with caplog.at_level(logging.WARNING, logger="sendboard.smtp"):
        assert t.send(SENDER, RECIPIENT, MESSAGE).outcome is Outcome.ACCEPTED
    t.close()
    assert "is not verified" in caplog.text
    assert server.handler.logins == [Login("PLAIN", USER, tls=True, accepted=True)]
    assert [m.tls for m in server.handler.messages] == [True]


def test_relay_without_starttls_gets_no_password(serve) -> None:
    # It offers AUTH in plain text (auth_require_tls=False) and would take the password.
    server = serve(SmtpServer(handler=Handler(users={USER: PASSWORD}), auth_require_tls=False))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as probe:
        probe.ehlo()
        assert probe.has_extn("auth") and not probe.has_extn("starttls")
    server.handler.ehlos.clear()
    message = refused(relay(server, "starttls"))
    assert "does not offer STARTTLS" in message and "no password was given" in message
    assert server.handler.ehlos == [False]
    assert server.handler.logins == [] and server.handler.messages == []


@dataclass
class BrokenStarttlsHandler(Handler):
    """Offers STARTTLS but has no certificate: answers it with 454 TLS not available."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*responses[:-1], "250-STARTTLS", responses[-1]]


def test_relay_refusing_starttls_gets_no_password(serve) -> None:
    handler = BrokenStarttlsHandler(users={USER: PASSWORD})
    server = serve(SmtpServer(handler=handler, auth_require_tls=False))
    message = refused(relay(server, "starttls"))
    assert "the server refused STARTTLS: 454" in message and "no password was given" in message
    assert server.handler.logins == [] and server.handler.messages == []


def test_certificate_from_another_ca_than_the_trusted_one(serve, certs) -> None:
    server = serve(starttls_server(certs.trusted))
    other_ca = str(certs.localhost_only.ca_file)
    message = refused(relay(server, "starttls", ca_file=other_ca))
    assert "could not be verified" in message and f"not issued by a CA in {other_ca!r}" in message
    assert server.handler.logins == []


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_wrong_password_over_tls(serve, certs, security) -> None:
    tls = certs.trusted
    server = serve(starttls_server(tls) if security == "starttls" else smtps_server(tls))
    message = refused(relay(server, security, password="wrong", ca_file=str(tls.ca_file)))
    assert f"refused the login of {USER!r}: 535" in message
    assert "check the username and password" in message
    logins = server.handler.logins
    assert logins and all(x.tls and not x.accepted for x in logins)
    assert server.handler.messages == []


def test_relay_that_offers_no_login(serve) -> None:
    server = serve(SmtpServer())  # aiosmtpd offers AUTH only after STARTTLS: here, never
    message = refused(relay(server, "none"))
    assert "does not offer a login (AUTH) without TLS (try starttls)" in message
    assert server.handler.messages == []


@pytest.mark.parametrize("security", ["tls", "STARTTLS", ""])
def test_unknown_security_never_falls_back_to_plain_text(serve, security) -> None:
    server = serve(SmtpServer(handler=Handler(users={USER: PASSWORD}), auth_require_tls=False))
    message = refused(relay(server, security))
    assert f"unknown security {security!r}: use none, starttls or ssl" in message
    assert server.handler.ehlos == [] and server.handler.logins == []


def test_implicit_tls_against_a_plain_port_explains_the_port(serve) -> None:
    server = serve(SmtpServer())
    message = refused(relay(server, "ssl"))
    assert "TLS handshake failed" in message and "465" in message and "starttls" in message


def test_starttls_against_an_implicit_tls_port_explains_the_port(serve, certs) -> None:
    server = serve(smtps_server(certs.trusted))
    t = SmtpTransport(SmtpSettings("127.0.0.1", server.port, "starttls", USER, PASSWORD,
                                   timeout=0.5, ca_file=str(certs.trusted.ca_file)))
    message = refused(t)
    assert "no greeting from the server" in message and "the security must be ssl" in message


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_unusable_ca_file_is_a_clear_failure(serve, certs, tmp_path, content) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_bytes(content)
    server = serve(starttls_server(certs.trusted))
    message = refused(relay(server, "starttls", ca_file=str(ca_file)))
    assert f"the CA file {str(ca_file)!r} (SMTP_CA_FILE) cannot be used" in message
    assert server.handler.ehlos == []


def test_trust_comes_from_the_deployment_settings_inside_the_app(app, certs) -> None:
    settings = SmtpSettings("127.0.0.1", 465, "ssl")
    assert settings.trust() == ("", True)  # the defaults: system CAs, verified
    app.config.update(SMTP_CA_FILE=str(certs.trusted.ca_file), SMTP_TLS_VERIFY=False)
    assert settings.trust() == (str(certs.trusted.ca_file), False)
    explicit = SmtpSettings("127.0.0.1", 465, "ssl", ca_file="", verify=True)
    assert explicit.trust() == ("", True)


def test_trust_outside_an_app_is_the_system_with_verification() -> None:
    assert SmtpSettings("127.0.0.1", 465, "ssl").trust() == ("", True)


# ---------------------------------------------------------------- the settings


@pytest.mark.parametrize("raw, expected", [("", True), ("on", True), ("1", True), ("Yes", True),
                                           ("off", False), ("0", False), ("false", False)])
def test_tls_verify_setting(monkeypatch, raw, expected) -> None:
    monkeypatch.setenv("SMTP_TLS_VERIFY", raw)
    assert Config().SMTP_TLS_VERIFY is expected


def test_tls_verify_setting_refuses_a_typo(monkeypatch) -> None:
    monkeypatch.setenv("SMTP_TLS_VERIFY", "of")
    with pytest.raises(RuntimeError, match="SMTP_TLS_VERIFY must be on or off"):
        Config()


def test_security_setting(monkeypatch) -> None:
    monkeypatch.setenv("SMTP_SECURITY", " STARTTLS ")
    assert Config().SMTP_SECURITY == "starttls"
    check_config({"SMTP_SECURITY": "ssl"})
    with pytest.raises(RuntimeError, match="SMTP_SECURITY must be none, starttls or ssl, got 'tls'"):
        check_config({"SMTP_SECURITY": "tls"})


def test_ca_file_setting_is_checked_when_the_app_is_built(certs, tmp_path: Path) -> None:
    check_config({"SMTP_CA_FILE": str(certs.trusted.ca_file)})
    check_config({"SMTP_CA_FILE": ""})
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello\n")
    for path in (tmp_path / "missing.pem", not_pem):
        with pytest.raises(RuntimeError, match="SMTP_CA_FILE must be a PEM file of CA certificates"):
            check_config({"SMTP_CA_FILE": str(path)})


# ---------------------------------------------------------------- through the sending engine


@pytest.fixture
def engine(app, monkeypatch):
    """Fresh connections for each test, and short retries before a mailing is interrupted."""
    monkeypatch.setattr(sending.batch, "RECONNECT_BACKOFF", (0.01,))
    sending.close_connections()
    yield app
    sending.close_connections()


def default_provider(server: SmtpServer, security: str, password: str = PASSWORD) -> None:
    db.session.add(Provider(name="Relay", kind="smtp", host="127.0.0.1", port=server.port,
                            security=security, username=USER, password=password,
                            is_default=True))
    db.session.commit()


def test_mailing_goes_out_through_a_starttls_provider(engine, redis_conn, serve, certs) -> None:
    server = serve(starttls_server(certs.trusted))
    default_provider(server, "starttls")
    engine.config.update(SMTP_CA_FILE=str(certs.trusted.ca_file), BATCH_SIZE=2)
    mailing = make_mailing([make_audience(5)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 5})
    received = server.by_recipient()
    assert len(received) == 5 and all(len(v) == 1 and v[0].tls for v in received.values())
    # One connection for all three batches: one login, over TLS.
    assert server.handler.logins == [Login("PLAIN", USER, tls=True, accepted=True)]


def test_mailing_goes_out_through_an_smtps_relay_from_the_environment(engine, redis_conn, serve,
                                                                      certs) -> None:
    server = serve(smtps_server(certs.trusted))
    engine.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=server.port, SMTP_SECURITY="ssl",
                         SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD,
                         SMTP_CA_FILE=str(certs.trusted.ca_file))
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 3})
    assert [m.tls for m in server.handler.messages] == [True] * 3
    assert server.handler.logins == [Login("PLAIN", USER, tls=True, accepted=True)]


def assert_interrupted_with_nothing_sent(mailing, server: SmtpServer, n: int, reason: str) -> None:
    db.session.refresh(mailing)
    assert mailing.status == Status.INTERRUPTED.value
    assert reason in mailing.status_reason
    assert responses_of(mailing) == Counter({"planned": n})  # all still to send, none half-recorded
    assert totals.get(mailing.id).get("handed_off", 0) == 0
    assert server.handler.messages == []


def test_untrusted_relay_interrupts_the_mailing_until_its_ca_is_trusted(engine, redis_conn, serve,
                                                                        certs) -> None:
    server = serve(starttls_server(certs.trusted))
    default_provider(server, "starttls")
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert_interrupted_with_nothing_sent(mailing, server, 3,
                                         "TLS certificate could not be verified")
    assert server.handler.ehlos == [False] * sending.CONFIG_TRIES  # tried again, then given up
    assert server.handler.logins == []

    engine.config["SMTP_CA_FILE"] = str(certs.trusted.ca_file)
    mailings.resume(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert responses_of(mailing) == Counter({"sent": 3})
    assert all(len(v) == 1 for v in server.by_recipient().values())


def test_verification_off_sends_to_a_self_signed_relay(engine, redis_conn, serve, certs) -> None:
    server = serve(smtps_server(certs.self_signed))
    default_provider(server, "ssl")
    engine.config["SMTP_TLS_VERIFY"] = False
    mailing = make_mailing([make_audience(2)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    db.session.refresh(mailing)
    assert mailing.status == Status.SENT.value
    assert [m.tls for m in server.handler.messages] == [True, True]


def test_relay_without_starttls_interrupts_the_mailing_before_any_login(engine, redis_conn,
                                                                       serve) -> None:
    server = serve(SmtpServer(handler=Handler(users={USER: PASSWORD}), auth_require_tls=False))
    default_provider(server, "starttls")
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert_interrupted_with_nothing_sent(mailing, server, 3, "does not offer STARTTLS")
    assert server.handler.logins == []


def test_wrong_password_interrupts_the_mailing_with_the_login_error(engine, redis_conn, serve,
                                                                   certs) -> None:
    server = serve(smtps_server(certs.trusted))
    default_provider(server, "ssl", password="wrong")
    engine.config["SMTP_CA_FILE"] = str(certs.trusted.ca_file)
    mailing = make_mailing([make_audience(3)])
    mailings.send_now(mailing)
    run_worker(redis_conn)
    assert_interrupted_with_nothing_sent(mailing, server, 3, f"refused the login of {USER!r}: 535")
    assert server.handler.logins and all(x.tls for x in server.handler.logins)

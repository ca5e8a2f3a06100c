"""A real SMTP server for tests (aiosmtpd on loopback) that remembers what it received and can
be told to refuse some recipients, to be slow, to require a login, and to speak TLS (STARTTLS or
implicit TLS) with a certificate from a throwaway CA made by `make_certificates`."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _over_tls(server: Any) -> bool:
    """Is this SMTP session encrypted (after STARTTLS, or implicit TLS from the first byte)?"""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


@dataclass
class Received:
    mail_from: str
    rcpt: list[str]
    data: bytes
    tls: bool = False
    peer: str = ""  # the client's address and port: one per SMTP connection


@dataclass
class Login:
    mechanism: str
    username: str
    tls: bool  # the session was encrypted when the AUTH command came
    accepted: bool


@dataclass
class Handler:
    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 ..." reply
    # address -> how many of its first attempts are refused for now with `defer_reply`
    defer: dict[str, int] = field(default_factory=dict)
    defer_reply: str = "451 4.3.0 Temporary failure, try again later"
    attempts: dict[str, int] = field(default_factory=dict)  # RCPT commands per address
    delay: float = 0.0  # seconds each DATA takes, holding up every connection
    # Seconds each DATA takes without holding up the other connections; `most_at_once` is how
    # many connections were in DATA at the same time, at most.
    pause: float = 0.0
    in_data: int = 0
    most_at_once: int = 0
    users: dict[str, str] = field(default_factory=dict)  # username -> password, for AUTH
    logins: list[Login] = field(default_factory=list)
    ehlos: list[bool] = field(default_factory=list)  # one per EHLO: was the session encrypted
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.ehlos.append(_over_tls(server))
        return responses

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        username = auth_data.login.decode()
        accepted = self.users.get(username) == auth_data.password.decode()
        self.logins.append(Login(mechanism, username, _over_tls(server), accepted))
        # handled=False: aiosmtpd answers a refusal with 535 itself (it stays silent otherwise)
        return AuthResult(success=accepted, handled=False)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
            if self.attempts[address] <= self.defer.get(address, 0):
                return self.defer_reply
        reply = self.refuse.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)
        if self.pause:
            self.in_data += 1
            self.most_at_once = max(self.most_at_once, self.in_data)
            try:
                await asyncio.sleep(self.pause)
            finally:
                self.in_data -= 1
        peer = session.peer
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or envelope.content,
                                          _over_tls(server), f"{peer[0]}:{peer[1]}" if peer else ""))
        return "250 Message accepted"


class SmtpServer:
    """`options` go to aiosmtpd: tls_context + require_starttls for STARTTLS, ssl_context for
    implicit TLS, auth_require_tls, auth_exclude_mechanism. With `handler.users` set, AUTH is
    checked against them."""

    def __init__(self, port: int | None = None, *, handler: Handler | None = None,
                 **options: Any) -> None:
        self.port = port or free_port()
        self.handler = handler or Handler()
        self.options = options
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        options = dict(self.options)
        if self.handler.users:
            options.setdefault("authenticator", self.handler.authenticate)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def by_recipient(self) -> dict[str, list[Received]]:
        result: dict[str, list[Received]] = {}
        for m in self.handler.messages:
            for r in m.rcpt:
                result.setdefault(r, []).append(m)
        return result


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # what a client must trust: the CA's certificate (or the self-signed one)
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path, *, names: tuple[str, ...] = ("localhost", "127.0.0.1"),
                      self_signed: bool = False) -> TlsFiles:
    """A server certificate for `names` (host names or IP addresses), issued by a new CA, or
    signed by itself with `self_signed`. Nothing is trusted by the system."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    server_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for n in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt_names.append(x509.DNSName(n))
    if self_signed:
        issuer_key, issuer_name, ca_cert = server_key, name(names[0]), None
    else:
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer_name = name("Sendboard test CA")
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(issuer_name).issuer_name(issuer_name)
            .public_key(issuer_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key()),
                           critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name(names[0])).issuer_name(issuer_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(pem(server_cert))
    key_file.write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    if ca_cert is None:
        return TlsFiles(cert_file, cert_file, key_file)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(pem(ca_cert))
    return TlsFiles(ca_file, cert_file, key_file)

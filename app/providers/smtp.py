"""SMTP hand-off with the outcome of every message made explicit.

The SMTP dialogue is driven step by step (MAIL, RCPT, DATA) rather than through sendmail(), so a
failure is known to have happened before the message could have been accepted (safe to send
again later) or after DATA was under way (ambiguous: the server may have it, so it must never be
sent again).

When the server announces PIPELINING (RFC 2920; Postfix and most relays do), MAIL, RCPT and DATA
go out in one write and their three replies are read together: one round trip instead of three
before the message body, with the same outcomes. The body is only sent after a 354, so nothing
can be accepted before the caller's hand-off record was written.

Security: `starttls` upgrades the plain connection (usually port 587) and `ssl` speaks TLS from the
first byte (SMTPS, usually 465). Either way the server's certificate is checked against the
system's CAs, or against `ca_file` for a relay with a private CA, and must name the host we
connect to; the login only ever goes over the encrypted connection. A server that does not offer
STARTTLS when it is required, a certificate that does not verify and a refused login are failures
to connect (ConnectionLost, not ambiguous) with a message that says which.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from flask import current_app, has_app_context

from app.domain.eligibility import ascii_address

log = logging.getLogger("sendboard.smtp")

SECURITY_MODES = ("none", "starttls", "ssl")
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = {62, 64}


class Outcome(Enum):
    ACCEPTED = "accepted"  # 250 after DATA
    REFUSED_PERMANENT = "permanent"  # 5xx for this recipient: record it, go on
    REFUSED_TRANSIENT = "transient"  # 4xx for this recipient: may be tried again


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    code: int
    text: str


class ConnectionLost(Exception):
    """The connection failed. `ambiguous` is True when DATA was under way; `misconfigured` when
    the relay cannot be used as configured (its certificate, STARTTLS, the login), which trying
    again will not mend."""

    def __init__(self, message: str, *, ambiguous: bool, misconfigured: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
        self.misconfigured = misconfigured


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "none"  # none | starttls | ssl (see SECURITY_MODES)
    username: str = ""
    password: str = ""
    timeout: float = 20.0
    local_hostname: str = "sendboard.local"
    # How the server's certificate is checked. ca_file: a PEM file of the CAs to trust instead of
    # the system's ("" for the system's); verify=False checks nothing (unsafe). None takes the
    # deployment's SMTP_CA_FILE / SMTP_TLS_VERIFY (the defaults outside an app: system CAs, verify).
    ca_file: str | None = None
    verify: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def trust(self) -> tuple[str, bool]:
        """The CA file ("" for the system's CAs) and whether to verify, settled."""
        ca_file, verify = self.ca_file, self.verify
        if has_app_context():
            cfg = current_app.config
            if ca_file is None:
                ca_file = cfg.get("SMTP_CA_FILE") or ""
            if verify is None:
                verify = bool(cfg.get("SMTP_TLS_VERIFY", True))
        return ca_file or "", True if verify is None else verify


def tls_context(ca_file: str = "", verify: bool = True) -> ssl.SSLContext:
    """A client context that checks the server's certificate and host name, unless told not to."""
    if verify:
        return ssl.create_default_context(cafile=ca_file or None)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Unusable(smtplib.SMTPException):
    """The server cannot be used as configured; the message says why."""


class _NoGreeting(_Unusable):
    """No greeting in time: a wrong security mode, or a server that does not answer (yet)."""


def _why(exc: OSError | smtplib.SMTPException, s: SmtpSettings) -> str:
    """What went wrong while connecting, in words an administrator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"the server's TLS certificate could not be verified ({exc.verify_message})"
        if exc.verify_code in _NAME_MISMATCH:
            return why + f"; it does not name {s.host!r}: connect with a host name it names"
        ca_file = s.trust()[0]
        if ca_file:
            return why + f"; it is not issued by a CA in {ca_file!r} (SMTP_CA_FILE)"
        return why + ("; if the relay's certificate is issued by a private CA, set SMTP_CA_FILE "
                      "to that CA's certificate (PEM)")
    if isinstance(exc, ssl.SSLError):
        why = f"the TLS handshake failed ({exc.reason or exc})"
        if exc.reason == "WRONG_VERSION_NUMBER" and s.security == "ssl":
            why += ("; the server did not answer in TLS: security ssl needs the relay's implicit-TLS "
                    "port (usually 465); on a plain port (587, 25) use starttls")
        return why
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        code, text = _reply(exc)
        return (f"the server refused the login of {s.username!r}: {code} {text} "
                "(check the username and password)")
    if isinstance(exc, smtplib.SMTPResponseException):
        code, text = _reply(exc)
        return f"{code} {text}"
    return str(exc)


# A dot-atom address (what nearly every recipient and our VERP sender are): smtplib.quoteaddr
# would parse it with email.utils and return it unchanged inside angle brackets.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_LEADING_DOT = re.compile(rb"(?m)^\.")
_NEWLINE_DOT = re.compile(rb"\n\.")  # a regular expression finds it faster than `in` here


def _quoteaddr(address: str) -> str:
    """smtplib.quoteaddr, without the parse for plain addresses."""
    if _SIMPLE_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _command(cmd: str, args: str) -> str:
    """One command line as smtplib.putcmd writes it (and refuses it) ."""
    line = f"{cmd} {args}"
    if "\r" in line or "\n" in line:
        line = line.replace("\n", "\\n").replace("\r", "\\r")
        raise ValueError(f"command and arguments contain prohibited newline characters: {line}")
    return line + "\r\n"


def _dot_terminated(data: bytes) -> bytes:
    """The message as smtplib.SMTP.data puts it on the wire: leading dots doubled, CRLF . CRLF."""
    if data[:1] == b"." or _NEWLINE_DOT.search(data):
        data = _LEADING_DOT.sub(b"..", data)
    if data[-2:] != b"\r\n":
        data += b"\r\n"
    return data + b".\r\n"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reply(exc: smtplib.SMTPResponseException) -> tuple[int, str]:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(
        exc.smtp_error
    )
    return exc.smtp_code, text


class SmtpTransport:
    """One reusable SMTP connection; `send` hands over one message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.conn: smtplib.SMTP | None = None
        self.pipelining = False  # the server announced PIPELINING (RFC 2920)

    def open(self) -> None:
        s = self.settings
        try:
            conn = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            misconfigured = (isinstance(exc, ssl.SSLCertVerificationError | smtplib.SMTPAuthenticationError)
                             or (isinstance(exc, _Unusable) and not isinstance(exc, _NoGreeting)))
            raise ConnectionLost(f"cannot connect to {s.label}: {_why(exc, s)}",
                                 ambiguous=False, misconfigured=misconfigured) from exc
        self.conn = conn
        self.pipelining = conn.has_extn("pipelining")

    def _context(self) -> ssl.SSLContext:
        ca_file, verify = self.settings.trust()
        if not verify:
            log.warning("the TLS certificate of %s is not verified (SMTP_TLS_VERIFY is off): "
                        "the connection can be intercepted", self.settings.label)
        try:
            return tls_context(ca_file, verify)
        except OSError as exc:  # also ssl.SSLError: not a PEM file of certificates
            raise _Unusable(f"the CA file {ca_file!r} (SMTP_CA_FILE) cannot be used: {exc}") from exc

    def _connect(self) -> smtplib.SMTP:
        """Connect, secure and log in; the connection is closed again if any step fails."""
        s = self.settings
        if s.security not in SECURITY_MODES:
            # Never fall back to a plain connection for a mode we do not know.
            raise _Unusable(f"unknown security {s.security!r}: use none, starttls or ssl")
        context = self._context() if s.security != "none" else None
        conn: smtplib.SMTP | None = None
        try:
            # Connecting in the constructor: smtplib keeps the host given there as the TLS
            # server_hostname (for SMTP_SSL and starttls alike), so the certificate must name it.
            if s.security == "ssl":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                        local_hostname=s.local_hostname, context=context)
            else:
                try:
                    conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout,
                                        local_hostname=s.local_hostname)
                except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
                    # An implicit-TLS port waits for our TLS hello and never greets in plain text.
                    raise _NoGreeting(f"no greeting from the server within {s.timeout:g} s ({exc}); "
                                    "if this port expects implicit TLS (usually 465), the "
                                    "security must be ssl") from exc
            conn.ehlo_or_helo_if_needed()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise _Unusable("the server does not offer STARTTLS, which security starttls "
                                    "requires; nothing was sent and no password was given")
                try:
                    conn.starttls(context=context)
                except smtplib.SMTPResponseException as exc:  # 454 TLS not available, say
                    code, text = _reply(exc)
                    raise _Unusable(f"the server refused STARTTLS: {code} {text}; nothing was "
                                    "sent and no password was given") from exc
                conn.ehlo()  # RFC 3207: forget what the server said before TLS
            if s.username:
                if not conn.has_extn("auth"):
                    where = "over TLS" if s.security != "none" else "without TLS (try starttls)"
                    raise _Unusable(f"the server does not offer a login (AUTH) {where}")
                conn.login(s.username, s.password)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return conn

    def close(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.quit()
        except (OSError, smtplib.SMTPException):
            self.conn.close()
        self.conn = None

    def alive(self) -> bool:
        if self.conn is None:
            return False
        try:
            return self.conn.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def send(self, envelope_from: str, recipient: str, data: bytes,
             before_body: Callable[[], None] | None = None) -> Result:
        """Hand over one message. Raises ConnectionLost when the connection fails.

        `before_body` runs before any byte of the message's content can leave, and only if the
        exchange gets that far (the sender records "handing off" there). If it raises, the
        connection is dropped without a body, so the message cannot be delivered, and the error
        goes to the caller. Over a pipelining server it runs while the server reads the envelope,
        so its own round trip (to Redis) overlaps the server's.
        """
        recipient = ascii_address(recipient)  # an international domain goes out as IDNA
        if self.conn is None:
            self.open()
        conn = self.conn
        assert conn is not None
        if self.pipelining:
            return self._send_pipelined(conn, envelope_from, recipient, data, before_body)
        try:
            # conn.mail and conn.rcpt without options, with the address quoted by _quoteaddr.
            conn.putcmd("mail", f"FROM:{_quoteaddr(envelope_from)}")
            code, text = conn.getreply()
            if code != 250:
                # The server refuses our sender: no recipient can be sent, so it is an outage.
                self._reset()
                reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
                raise ConnectionLost(f"{self.settings.label} refused the sender: {code} {reason}",
                                     ambiguous=False)
            conn.putcmd("rcpt", f"TO:{_quoteaddr(recipient)}")
            code, text = conn.getreply()
            if code not in (250, 251):
                self._reset()
                return self._refused(code, text)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise self._lost(exc) from exc
        self._before_body(before_body)
        try:
            code, text = conn.data(data)
        except smtplib.SMTPDataError as exc:
            code, msg = _reply(exc)
            self._reset()
            return self._refused(code, msg)
        except (TimeoutError, OSError, smtplib.SMTPServerDisconnected) as exc:
            raise self._lost(exc, during_data=True) from exc
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if code == 250:
            return Result(Outcome.ACCEPTED, code, message)
        return self._refused(code, message)

    def _lost(self, exc: BaseException, *, during_data: bool = False) -> ConnectionLost:
        """The connection failed: forget it. During DATA the message may have arrived."""
        self.conn = None
        where = " during DATA" if during_data else ""
        return ConnectionLost(f"{self.settings.label}{where}: {exc}", ambiguous=during_data)

    def _before_body(self, before_body: Callable[[], None] | None) -> None:
        if before_body is None:
            return
        try:
            before_body()
        except BaseException:
            if self.conn is not None:  # hang up with no body: nothing of this message leaves
                self.conn.close()
                self.conn = None
            raise

    def _send_pipelined(self, conn: smtplib.SMTP, envelope_from: str, recipient: str,
                        data: bytes, before_body: Callable[[], None] | None) -> Result:
        """`send` in two round trips: MAIL, RCPT and DATA together, then the body.

        `before_body` runs between sending the commands and reading their replies."""
        commands = (_command("mail", f"FROM:{_quoteaddr(envelope_from)}")
                    + _command("rcpt", f"TO:{_quoteaddr(recipient)}"))
        mail: tuple[int, bytes] | None = None
        try:
            conn.send(commands + "data\r\n")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise self._lost(exc) from exc
        self._before_body(before_body)
        try:
            mail = conn.getreply()
            rcpt = conn.getreply()
            go = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.conn = None
            if mail is not None and mail[0] != 250:  # a refused sender, then the server hung up
                raise ConnectionLost(f"{self.settings.label} refused the sender: {mail[0]} "
                                     f"{_text(mail[1])}", ambiguous=False) from exc
            raise ConnectionLost(f"{self.settings.label}: {exc}", ambiguous=False) from exc
        assert mail is not None
        code, text = mail
        if go[0] == 354 and (code != 250 or rcpt[0] not in (250, 251)):
            # The server wants a body for a transaction we drop: hang up rather than send one.
            conn.close()
            self.conn = None
        if code != 250:
            # The server refuses our sender: no recipient can be sent, so it is an outage.
            self._reset()
            raise ConnectionLost(f"{self.settings.label} refused the sender: {code} {_text(text)}",
                                 ambiguous=False)
        code, text = rcpt
        if code not in (250, 251):
            self._reset()
            return self._refused(code, text)
        code, text = go
        if code != 354:
            self._reset()
            return self._refused(code, _text(text))
        try:
            conn.send(_dot_terminated(data))
            code, text = conn.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise self._lost(exc, during_data=True) from exc
        message = _text(text)
        if code == 250:
            return Result(Outcome.ACCEPTED, code, message)
        return self._refused(code, message)

    def _refused(self, code: int, text: bytes | str) -> Result:
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if code == 421:  # the server is closing the connection: this recipient is refused for
            # now (deferred), and the next message opens a new connection
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return Result(Outcome.REFUSED_TRANSIENT, code, message)
        outcome = Outcome.REFUSED_PERMANENT if code >= 500 else Outcome.REFUSED_TRANSIENT
        return Result(outcome, code, message)

    def _reset(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rset()
        except (OSError, smtplib.SMTPException):
            self.conn = None

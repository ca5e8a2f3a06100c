"""SMTP hand-off with the outcome of every message made explicit.

The SMTP dialogue is driven step by step (MAIL, RCPT, DATA) rather than through sendmail(), so a
failure is known to have happened before the message could have been accepted (safe to send
again later) or after DATA was under way (ambiguous: the server may have it, so it must never be
sent again).

When the server announces PIPELINING (RFC 2920; Postfix and most relays do), MAIL, RCPT and DATA
go out in one write and their three replies are read together: one round trip instead of three
before the message body, with the same outcomes. The body is only sent after a 354, so nothing
can be accepted before the caller's hand-off record was written.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from enum import Enum


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
    """The connection failed. `ambiguous` is True when DATA was under way."""

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "none"  # none | starttls | ssl
    username: str = ""
    password: str = ""
    timeout: float = 20.0
    local_hostname: str = "sendboard.local"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


# A dot-atom address (what nearly every recipient and our VERP sender are): smtplib.quoteaddr
# would parse it with email.utils and return it unchanged inside angle brackets.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_LEADING_DOT = re.compile(rb"(?m)^\.")


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
    if data[:1] == b"." or b"\n." in data:
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
            if s.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, local_hostname=s.local_hostname,
                    context=ssl.create_default_context(),
                )
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout,
                                    local_hostname=s.local_hostname)
                if s.security == "starttls":
                    conn.starttls(context=ssl.create_default_context())
            conn.ehlo_or_helo_if_needed()
            if s.username:
                conn.login(s.username, s.password)
        except (OSError, smtplib.SMTPException) as exc:
            raise ConnectionLost(f"cannot connect to {s.label}: {exc}", ambiguous=False) from exc
        self.conn = conn
        self.pipelining = conn.has_extn("pipelining")

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

    def send(self, envelope_from: str, recipient: str, data: bytes) -> Result:
        """Hand over one message. Raises ConnectionLost when the connection fails."""
        if self.conn is None:
            self.open()
        conn = self.conn
        assert conn is not None
        if self.pipelining:
            return self._send_pipelined(conn, envelope_from, recipient, data)
        try:
            code, text = conn.mail(envelope_from)
            if code != 250:
                # The server refuses our sender: no recipient can be sent, so it is an outage.
                self._reset()
                reason = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
                raise ConnectionLost(f"{self.settings.label} refused the sender: {code} {reason}",
                                     ambiguous=False)
            code, text = conn.rcpt(recipient)
            if code not in (250, 251):
                self._reset()
                return self._refused(code, text)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.conn = None
            raise ConnectionLost(f"{self.settings.label}: {exc}", ambiguous=False) from exc
        try:
            code, text = conn.data(data)
        except smtplib.SMTPDataError as exc:
            code, msg = _reply(exc)
            self._reset()
            return self._refused(code, msg)
        except (TimeoutError, OSError, smtplib.SMTPServerDisconnected) as exc:
            self.conn = None
            raise ConnectionLost(f"{self.settings.label} during DATA: {exc}", ambiguous=True) from exc
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if code == 250:
            return Result(Outcome.ACCEPTED, code, message)
        return self._refused(code, message)

    def _send_pipelined(self, conn: smtplib.SMTP, envelope_from: str, recipient: str,
                        data: bytes) -> Result:
        """`send` in two round trips: MAIL, RCPT and DATA together, then the body."""
        commands = (_command("mail", f"FROM:{_quoteaddr(envelope_from)}")
                    + _command("rcpt", f"TO:{_quoteaddr(recipient)}"))
        mail: tuple[int, bytes] | None = None
        try:
            conn.send(commands + "data\r\n")
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
            self.conn = None
            raise ConnectionLost(f"{self.settings.label} during DATA: {exc}", ambiguous=True) from exc
        message = _text(text)
        if code == 250:
            return Result(Outcome.ACCEPTED, code, message)
        return self._refused(code, message)

    def _refused(self, code: int, text: bytes | str) -> Result:
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        if code == 421:  # the server is closing the connection: treat as an outage
            self.conn = None
            raise ConnectionLost(f"{self.settings.label}: {code} {message}", ambiguous=False)
        outcome = Outcome.REFUSED_PERMANENT if code >= 500 else Outcome.REFUSED_TRANSIENT
        return Result(outcome, code, message)

    def _reset(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rset()
        except (OSError, smtplib.SMTPException):
            self.conn = None

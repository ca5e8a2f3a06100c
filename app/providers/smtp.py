"""SMTP hand-off with the outcome of every message made explicit.

The SMTP dialogue is driven step by step (MAIL, RCPT, DATA) rather than through sendmail(), so a
failure is known to have happened before the message could have been accepted (safe to send
again later) or after DATA was under way (ambiguous: the server may have it, so it must never be
sent again).
"""

from __future__ import annotations

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

"""Outbound webhooks: the pure rules (docs/ARCHITECTURE.md, "Outbound webhooks").

- how a POST is signed (HMAC-SHA256 over ``"{timestamp}.{body}"``) and how a receiver checks it;
- the retry schedule (30 s, 2 min, 10 min, 30 min, then hourly) and when a delivery is given up
  (24 hours after its first attempt) or an endpoint disabled (failing for 24 hours straight);
- which URLs and addresses may receive events (http(s) only; no private, loopback, link-local,
  multicast or reserved address unless the deployment allows private addresses);
- which run of new events a delivery may take (`deliverable_up_to`), so an event committed late
  by a slow transaction is not skipped;
- the JSON body, with stable field names.

No I/O here: name resolution and HTTP belong to app.services.outbound.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

TIMESTAMP_HEADER = "Sendboard-Timestamp"
SIGNATURE_HEADER = "Sendboard-Signature"
DELIVERY_HEADER = "Sendboard-Delivery"
SIGNATURE_VERSION = "v1"
TOLERANCE_SECONDS = 300  # what the README tells receivers to accept between clocks

RETRY_SCHEDULE = (timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10),
                  timedelta(minutes=30))
RETRY_AFTER_SCHEDULE = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)  # a delivery failing this long since its first attempt
DISABLE_AFTER = timedelta(hours=24)  # an endpoint failing this long straight
GAP_WAIT = timedelta(seconds=10)  # how long a missing event id may hold the cursor back
MAX_URL_CHARS = 2000
SECRET_PREFIX = "whsec_"


# ---------------------------------------------------------------- signing


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe, with a recognisable prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Sendboard-Signature value: ``v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>``."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body,
                   hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: the timestamp is recent and one of the signatures matches.

    The header may carry several comma-separated ``v1=`` values (while a secret is rotated).
    """
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature.split(","))


def headers(secret: str, timestamp: int, body: bytes, delivery_id: int) -> dict[str, str]:
    """The headers of one attempt."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "Sendboard-Webhooks/1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: str(delivery_id),
    }


# ---------------------------------------------------------------- retries


def is_success(status_code: int | None) -> bool:
    """A 2xx answer delivers; anything else (3xx included: redirects are not followed) fails."""
    return status_code is not None and 200 <= status_code < 300


def retry_delay(failed_attempts: int) -> timedelta:
    """The wait after the n-th failed attempt (1-based): 30 s, 2 min, 10 min, 30 min, hourly."""
    if failed_attempts < 1:
        return timedelta(0)
    if failed_attempts <= len(RETRY_SCHEDULE):
        return RETRY_SCHEDULE[failed_attempts - 1]
    return RETRY_AFTER_SCHEDULE


@dataclass(frozen=True)
class AfterFailure:
    """What a failed attempt leads to."""

    give_up: bool
    next_attempt_at: datetime | None
    disable_endpoint: bool
    failing_since: datetime


def after_failure(*, failed_attempts: int, first_attempt_at: datetime, now: datetime,
                  failing_since: datetime | None) -> AfterFailure:
    """The next attempt (or giving up) and the endpoint's fate after a failed attempt.

    `failed_attempts` counts this one; `failing_since` is when the endpoint's current run of
    failures began (None: this failure begins it).
    """
    since = failing_since or now
    give_up = now - first_attempt_at >= GIVE_UP_AFTER
    return AfterFailure(
        give_up=give_up,
        next_attempt_at=None if give_up else now + retry_delay(failed_attempts),
        disable_endpoint=now - since >= DISABLE_AFTER,
        failing_since=since,
    )


# ---------------------------------------------------------------- where events may go


def url_refusal(url: str) -> str | None:
    """Why a URL may not receive events (by its form alone), else None."""
    if not url or len(url) > MAX_URL_CHARS:
        return f"Give a URL of at most {MAX_URL_CHARS} characters."
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        return "The URL may not contain spaces or characters outside ASCII."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "The URL is not well formed."
    if parts.scheme not in ("http", "https"):
        return "Only http:// and https:// URLs can receive events."
    if not parts.hostname:
        return "The URL has no host name."
    if parts.username is not None or parts.password is not None:
        return "Put no user name or password in the URL: requests are signed instead."
    if port == 0:
        return "The URL's port is not valid."
    return None


def host_and_port(url: str) -> tuple[str, int, bool]:
    """The host name, port and whether TLS is used, of a URL `url_refusal` accepted."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    return parts.hostname or "", parts.port or (443 if tls else 80), tls


def request_target(url: str) -> str:
    """The path and query to POST to, as the URL has them ("/" for none); the fragment stays
    with the sender."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why events may not be sent to this IP address, else None.

    Loopback, private (RFC 1918, unique local), link-local (cloud metadata lives there),
    carrier-grade NAT, multicast, unspecified and reserved addresses are refused unless
    `allow_private`; an IPv4 address carried in IPv6 (mapped, 6to4 or the NAT64 prefix) is
    judged as that IPv4 address too, and deprecated site-local IPv6 counts as private.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address[:60]} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and not allow_private:
        if ip.is_site_local:
            return f"{ip} is a private address"
        carried = ip.sixtofour
        if carried is None and ip in _NAT64:
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None:
            reason = address_refusal(str(carried), allow_private=False)
            if reason:
                return f"{ip} carries {carried}: {reason}"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not an address events can be sent to"
    if allow_private:
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_private or ip in ipaddress.ip_network("100.64.0.0/10"):
        return f"{ip} is a private address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is a reserved address"
    return None


def addresses_refusal(addresses: Sequence[str], *, allow_private: bool) -> str | None:
    """None when every address the host resolved to may receive events; else the first reason.

    Every address is checked, not only the one connected to: a host that resolves to a public
    and a private address is refused.
    """
    if not addresses:
        return "the host name does not resolve"
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason:
            return reason
    return None


# ---------------------------------------------------------------- which events, and their body


def wants(event_kinds: Iterable[str] | None, kind: str) -> bool:
    """Does an endpoint subscribed to `event_kinds` (empty: every kind) want this kind?"""
    chosen = list(event_kinds or ())
    return not chosen or kind in chosen


def deliverable_up_to(cursor: int, rows: Sequence[tuple[int, datetime]], now: datetime,
                      gap_wait: timedelta = GAP_WAIT) -> int:
    """The last event id a delivery may take, from the ids (and receipt times) after `cursor`.

    Ids are handed out when a row is inserted, not when it is committed: id 11 may become
    visible after id 12, and a cursor moved past 12 would skip it for ever. So a run stops before
    a missing id, until the event after the gap is `gap_wait` old: by then the missing id is a
    rolled-back insert or a deleted row, not a transaction still running. `rows` are in id order.
    """
    last = cursor
    for event_id, received_at in rows:
        if event_id != last + 1 and now - _aware(received_at) < gap_wait:
            break
        last = event_id
    return last


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 with its zone (UTC), e.g. 2026-11-30T15:40:48.123456+00:00."""
    if moment.tzinfo is UTC:  # as the database hands times back: no conversion needed
        return moment.isoformat()
    return _aware(moment).astimezone(UTC).isoformat()


def event_json(*, event_id: int, kind: str, mailing_id: int, recipient_id: int, email: str,
               occurred_at: datetime, detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """One event as receivers see it: these field names are part of the public contract."""
    return {"id": event_id, "kind": kind, "mailing_id": mailing_id,
            "recipient_id": recipient_id, "email": email, "occurred_at": iso(occurred_at),
            "detail": dict(detail) if detail else {}}


def body(events: Sequence[Mapping[str, Any]]) -> str:
    """The JSON body of a delivery: ``{"events": [...]}``, compact, keys in a stable order."""
    return json.dumps({"events": list(events)}, separators=(",", ":"), ensure_ascii=False)

"""Who may receive a mailing: the eligibility rules and their priority (docs/ARCHITECTURE.md, "Mailing lifecycle").

The same rules run twice: as set-based SQL when a mailing is prepared (app/services/audience.py)
and through `check` right before each hand-off, so a contact who unsubscribes mid-mailing is not
sent. Address validity is decided here and stored on the contact when it is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.domain.responses import Response

DEFAULT_INACTIVITY = timedelta(days=730)

_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TLD = re.compile(r"^(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$")
# The common address in one pass: ASCII atoms, at most 64 before @, labels of the allowed form
# and a valid top-level domain. A match is always valid; anything else takes the full check.
_PLAIN = re.compile(
    r"(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{0,58}[A-Za-z0-9])")


def normalize_address(address: str) -> str:
    """Trimmed, with the domain lower-cased (the local part is kept as written)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip()
    return f"{local}@{domain.lower()}"


def address_key(address: str) -> str:
    """The identity of an address: duplicates are compared case-insensitively."""
    return address.strip().lower()


def ascii_address(address: str) -> str:
    """The address as SMTP and headers carry it: an international domain in its ASCII (IDNA)
    form, e.g. "anna@bücher.de" -> "anna@xn--bcher-kva.de". Other addresses are unchanged; an
    address whose domain cannot be encoded is returned as given (address_problem refuses it)."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def address_problem(address: str) -> str | None:
    """Why an address cannot receive mail (syntax and domain form; no DNS), or None."""
    if len(address) <= 254 and _PLAIN.fullmatch(address) is not None:
        return None
    return _address_problem(address)


def _address_problem(address: str) -> str | None:
    """address_problem, rule by rule (the words say which rule failed)."""
    address = address.strip()
    if not address:
        return "the address is empty"
    if len(address) > 254:
        return "the address is longer than 254 characters"
    if address.count("@") != 1:
        return "the address must contain exactly one @"
    local, domain = address.split("@")
    if not local:
        return "the part before @ is empty"
    if len(local) > 64:
        return "the part before @ is longer than 64 characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before @ has a misplaced dot"
    if not all(_ATOM.match(part) for part in local.split(".")):
        return "the part before @ has characters that are not allowed"
    if not domain:
        return "the domain is missing"
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return "the domain is not a valid international domain name"
    labels = ascii_domain.rstrip(".").split(".")
    if len(labels) < 2:
        return "the domain has no dot"
    if not all(_LABEL.match(label) for label in labels):
        return "the domain has a label that is not allowed"
    if not _TLD.match(labels[-1]):
        return "the top-level domain is not valid"
    return None


def is_valid_address(address: str) -> bool:
    return address_problem(address) is None


@dataclass(frozen=True)
class ContactFacts:
    address: str
    do_not_email: bool
    valid: bool
    opted_out_types: frozenset[int]
    last_transaction: datetime | None
    created: datetime


def is_inactive(facts: ContactFacts, *, now: datetime, inactivity: timedelta | None) -> bool:
    """No transaction (or, never having one, no sign-up) within the inactivity period."""
    if inactivity is None:
        return False
    last = facts.last_transaction or facts.created
    return last < now - inactivity


def check(facts: ContactFacts, *, email_type: int | None, now: datetime,
          inactivity: timedelta | None = DEFAULT_INACTIVITY,
          duplicate: bool = False, transactional: bool = False) -> Response | None:
    """The not-sent response for this contact, highest-priority rule first; None if eligible.

    A transactional email type (receipts, password resets) is stopped only by what says the
    person or the address must not be mailed: do-not-email (set by a hard bounce, a complaint,
    an unsubscribe from everything or staff) and an invalid address. Opting out of email types
    and the inactivity hold do not apply to it.
    """
    if duplicate:
        return Response.DUPLICATE
    if facts.do_not_email:
        return Response.DO_NOT_EMAIL
    if not transactional and email_type is not None and email_type in facts.opted_out_types:
        return Response.TYPE_UNSUBSCRIBED
    if not facts.valid or not is_valid_address(facts.address):
        return Response.INVALID_ADDRESS
    if not transactional and is_inactive(facts, now=now, inactivity=inactivity):
        return Response.INACTIVE
    return None

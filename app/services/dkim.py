"""DKIM keys of the sending domains: made or uploaded in Settings, used to sign outgoing mail.

A key is stored once and never shown again; the settings page shows only the public key, as
the TXT record to publish. Messages are signed after they are built, over their final bytes, so
the signature covers exactly what is handed to the SMTP server (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import date, datetime

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy
from sqlalchemy import select

from app.domain.dkim import (
    CANONICALIZATION,
    GENERATED_KEY_BITS,
    SIGNED_HEADERS,
    DkimNameError,
    candidate_domains,
    check_key_bits,
    default_selector,
    normalize_domain,
    normalize_selector,
    record_name,
    record_value,
    zone_line,
)
from app.extensions import db
from app.models import DkimKey

MAX_PEM_CHARS = 20_000  # a 4096-bit key in PEM is about 3,300 characters


class DkimError(ValueError):
    """A key that cannot be stored; str() says why, for the person who entered it."""


class SigningError(RuntimeError):
    """A stored key could not sign a message."""


@dataclass(frozen=True)
class Record:
    """The DNS TXT record that publishes a key's public half."""

    name: str
    value: str
    zone_line: str


def record_for(key: DkimKey) -> Record:
    value = record_value(key.public_key)
    return Record(record_name(key.selector, key.domain), value, zone_line(key.selector, key.domain, value))


def list_keys() -> list[DkimKey]:
    return list(db.session.execute(select(DkimKey).order_by(DkimKey.domain)).scalars())


def suggested_selector(today: date) -> str:
    return default_selector(today)


def _names(domain: str, selector: str) -> tuple[str, str]:
    try:
        clean_domain = normalize_domain(domain)
        return clean_domain, normalize_selector(selector, clean_domain)
    except DkimNameError as exc:
        raise DkimError(str(exc)) from exc


def _check_free(domain: str) -> None:
    if db.session.execute(select(DkimKey.id).where(DkimKey.domain == domain)).first() is not None:
        raise DkimError(f"{domain} has a DKIM key already; delete it first to replace it.")


def _store(domain: str, selector: str, key: rsa.RSAPrivateKey, origin: str) -> DkimKey:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    row = DkimKey(domain=domain, selector=selector, private_key_pem=pem,
                  public_key=base64.b64encode(public).decode("ascii"), bits=key.key_size, origin=origin)
    db.session.add(row)
    db.session.flush()
    return row


def generate(domain: str, selector: str) -> DkimKey:
    """Make a new RSA key for a domain."""
    clean_domain, clean_selector = _names(domain, selector)
    _check_free(clean_domain)
    key = rsa.generate_private_key(public_exponent=65537, key_size=GENERATED_KEY_BITS)
    return _store(clean_domain, clean_selector, key, "generated")


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text (PKCS#1 or PKCS#8, unencrypted), or DkimError saying
    what is wrong with it."""
    text = pem.decode("utf-8", "replace") if isinstance(pem, bytes) else (pem or "")
    text = text.strip()
    if not text:
        raise DkimError("Paste or upload the private key (a PEM file starting with -----BEGIN).")
    if len(text) > MAX_PEM_CHARS:
        raise DkimError("This file is too large to be a DKIM private key.")
    if "PRIVATE KEY-----" not in text:
        if "PUBLIC KEY-----" in text or "CERTIFICATE-----" in text:
            raise DkimError("This is a public key or certificate; upload the private key.")
        raise DkimError("This is not a PEM private key (it should start with -----BEGIN PRIVATE KEY----- "
                        "or -----BEGIN RSA PRIVATE KEY-----).")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii", "replace"), password=None)
    except TypeError as exc:  # encrypted, and no password given
        raise DkimError("The key is protected by a passphrase; upload it without one "
                        "(openssl rsa -in key.pem -out plain.pem).") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimError("The private key cannot be read: the PEM text is damaged or incomplete.") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("Only RSA keys are supported for DKIM here; this key is of another type.")
    try:
        check_key_bits(key.key_size)
    except ValueError as exc:
        raise DkimError(str(exc)) from exc
    return key


def upload(domain: str, selector: str, pem: str | bytes) -> DkimKey:
    """Store an existing private key for a domain (moved from another sending system, say)."""
    clean_domain, clean_selector = _names(domain, selector)
    key = load_private_key(pem)
    _check_free(clean_domain)
    return _store(clean_domain, clean_selector, key, "uploaded")


def delete(key_id: int) -> str | None:
    """Remove a key; mail from its domain goes out unsigned from the next batch on.
    Returns the domain, or None if there was no such key."""
    row = db.session.get(DkimKey, key_id)
    if row is None:
        return None
    domain = row.domain
    db.session.delete(row)
    db.session.flush()  # gone for the rest of the caller's unit of work, too
    return domain


_HEADERS = tuple(h.lower().encode("ascii") for h in SIGNED_HEADERS)
_CANON = "/".join(CANONICALIZATION).encode("ascii")
_ALGORITHM = b"rsa-sha256"
_NAME = b"DKIM-Signature"
_NAME_LEN = len(_NAME)
_CRLF = b"\r\n"


class Signer:
    """Signs final message bytes with one domain's key; made once per batch, used per message.

    dkimpy parses the message, canonicalizes it and hashes the signed header fields, exactly as
    its own sign() does; the RSA step runs in OpenSSL (through cryptography), which takes about a
    millisecond where dkimpy's pure-Python RSA takes ten or more. The signature's time (t=) is the
    message's own Date rather than the moment of signing, and RSA PKCS#1 v1.5 signatures are
    deterministic, so a message rebuilt later from its stored parts carries the very signature it
    left with, for as long as the key is kept.
    """

    def __init__(self, domain: str, selector: str, private_key_pem: str) -> None:
        self.domain = domain
        self.selector = selector
        self._domain_b = domain.encode("ascii")
        self._selector_b = selector.encode("ascii")
        try:  # parsed once here, not for every message
            self._key = load_private_key(private_key_pem)
        except DkimError as exc:
            raise SigningError(f"the DKIM key of {domain} cannot be used: {exc}") from exc

    def __call__(self, message: bytes, when: datetime) -> bytes:
        """The message with its DKIM-Signature header field in front (RFC 6376 section 5):
        rsa-sha256, relaxed/relaxed, over SIGNED_HEADERS and the whole body."""
        try:
            parsed = dkimpy.DKIM(message, signature_algorithm=_ALGORITHM, linesep=_CRLF)
            canon = CanonicalizationPolicy.from_c_value(_CANON)
            body_hash = base64.b64encode(hashlib.sha256(canon.canonicalize_body(parsed.body)).digest())
            fields = [
                (b"v", b"1"), (b"a", _ALGORITHM), (b"c", _CANON), (b"d", self._domain_b),
                (b"i", b"@" + self._domain_b), (b"q", b"dns/txt"), (b"s", self._selector_b),
                (b"t", str(int(when.timestamp())).encode("ascii")), (b"h", b" : ".join(_HEADERS)),
                (b"bh", body_hash), (b"b", b"0" * 60),  # placeholder: folds b= onto its own line
            ]
            # The header as hashed: every tag, b= empty (RFC 6376 3.7).
            unsigned = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields), namelen=_NAME_LEN, linesep=_CRLF)
            unsigned = dkimpy.RE_BTAG.sub(b"\\1", unsigned)
            digest = hashlib.sha256()
            dkimpy.hash_headers(digest, canon, canon.canonicalize_headers(parsed.headers), _HEADERS,
                                (_NAME, b" " + unsigned), dict(fields))
        except dkimpy.DKIMException as exc:
            raise SigningError(f"DKIM signing with the key of {self.domain} failed: {exc}") from exc
        signature = self._key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value: bytes = dkimpy.fold(b"; ".join(b"=".join(f) for f in fields) + _CRLF, namelen=_NAME_LEN,
                                   linesep=_CRLF)
        return _NAME + b": " + value + message


def signer_for(from_domain: str) -> Signer | None:
    """The signer for mail from `from_domain`: its own key, else the nearest parent domain's;
    None when neither has one. One query, on its own short connection, so no transaction is
    left open by the caller's session while a batch is being sent."""
    try:
        domain = normalize_domain(from_domain)
    except DkimNameError:
        return None
    candidates = candidate_domains(domain)
    if not candidates:
        return None
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(DkimKey.domain, DkimKey.selector, DkimKey.private_key_pem)
            .where(DkimKey.domain.in_(candidates))
        ).all()
    if not rows:
        return None
    best = min(rows, key=lambda row: candidates.index(row.domain))
    return Signer(best.domain, best.selector, best.private_key_pem)

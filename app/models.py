"""Database tables (SQLAlchemy 2.0 typed models).

Times are stored as naive UTC and handed back timezone-aware (see UTCDateTime), so code above this
layer only ever sees aware UTC datetimes.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.domain import roles
from app.domain.lifecycle import Status
from app.domain.responses import Response
from app.extensions import db

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


_NOTHING = object()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC; refuses naive input so no local time slips in."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)

    def bind_processor(self, dialect: Any) -> Any:
        """The usual processor, remembering its last value: a sender's progress commits bind
        the same hand-off second and commit time to hundreds of rows in a row. Equal instants
        store alike whatever their time zone, and a naive value never equals an aware one."""
        process = super().bind_processor(dialect)
        if process is None:
            return None
        last: list[tuple[Any, Any]] = [(_NOTHING, None)]

        def remembering(value: Any) -> Any:
            seen, result = last[0]  # one tuple: a pair another thread wrote whole
            if type(value) is type(seen) and value == seen:
                return result
            result = process(value)
            last[0] = (value, result)
            return result

        return remembering


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(20), default="editor")  # admin | editor | viewer
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of every session and remember cookie; a new stamp ends all of the user's sessions.
    session_stamp: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(8),
                                               server_default="")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:  # flask-login refuses inactive users
        return self.active

    def get_id(self) -> str:
        """Session and remember cookies carry the stamp: a stale stamp signs nobody in."""
        return f"{self.id}:{self.session_stamp}"

    def new_session_stamp(self) -> None:
        self.session_stamp = secrets.token_hex(8)

    def can(self, action: str) -> bool:
        return roles.can(self.role, action)

    @property
    def role_label(self) -> str:
        parsed = roles.parse_role(self.role)
        return roles.ROLE_LABELS[parsed.value] if parsed else self.role


class AuditEntry(db.Model):  # type: ignore[name-defined,misc]
    """Who changed what and when: staff actions, sign-ins and refused sign-ins."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    user_email: Mapped[str] = mapped_column(String(254), default="")
    action: Mapped[str] = mapped_column(String(50))
    target_kind: Mapped[str] = mapped_column(String(30), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(String(500), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (
        Index("ix_audit_target", "target_kind", "target_id", "id"),
        Index("ix_audit_user", "user_id", "id"),
        Index("ix_audit_action", "action", "id"),
    )


class LoginThrottle(db.Model):  # type: ignore[name-defined,misc]
    """Failed sign-ins per address or client address (key 'email:...' / 'ip:...')."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)


class EmailType(db.Model):  # type: ignore[name-defined,misc]
    """A subscription category (newsletter, offers, ...) a contact can leave on its own."""

    __tablename__ = "email_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Transactional types (receipts, password resets): only hard bounces, complaints and
    # do-not-email stop them; unsubscribes from other types and the 2-year hold do not.
    transactional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Contact(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased address: the identity used for de-duplication and re-import.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    do_not_email: Mapped[bool] = mapped_column(Boolean, default=False)
    do_not_email_reason: Mapped[str] = mapped_column(String(100), default="")
    valid: Mapped[bool] = mapped_column(Boolean, default=True)
    invalid_reason: Mapped[str] = mapped_column(String(200), default="")
    soft_bounce_mailings: Mapped[int] = mapped_column(Integer, default=0)
    last_transaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # IANA zone for delivery at the contact's local time; blank means the organisation's zone.
    time_zone: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_contacts_created", "created_at"),)


class Transaction(db.Model):  # type: ignore[name-defined,misc]
    """A purchase or similar event; the newest one lifts the inactivity suppression."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reference: Mapped[str] = mapped_column(String(200), default="")
    amount: Mapped[str] = mapped_column(String(40), default="")
    source: Mapped[str] = mapped_column(String(20), default="api")  # api | csv | cli
    # A caller's key for one transaction: the same key again records nothing new.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)

    __table_args__ = (Index("ix_transactions_contact", "contact_id", "occurred_at"),)


class TypeOptOut(db.Model):  # type: ignore[name-defined,misc]
    """A contact who left one email type but may still receive the others."""

    __tablename__ = "type_opt_outs"

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    email_type_id: Mapped[int] = mapped_column(
        ForeignKey("email_types.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_type_opt_outs_type", "email_type_id", "contact_id"),)


class ContactList(db.Model):  # type: ignore[name-defined,misc]
    """A list of contacts; a segment is a list with a rule instead of fixed members."""

    __tablename__ = "lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # For segments: the rule (app.domain.segments), {"match": ..., "conditions": [...]}; None for
    # plain lists.
    rule: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ListMember(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "list_members"

    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_list_members_contact", "contact_id"),)


class MailingList(db.Model):  # type: ignore[name-defined,misc]
    """The audience of a mailing: the union of these lists."""

    __tablename__ = "mailing_lists"

    mailing_id: Mapped[int] = mapped_column(
        ForeignKey("mailings.id", ondelete="CASCADE"), primary_key=True
    )
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True)


class Mailing(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "mailings"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(500), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    from_address: Mapped[str] = mapped_column(String(320), default="")
    reply_to: Mapped[str] = mapped_column(String(320), default="")
    html_body: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str] = mapped_column(Text, default="")
    email_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_types.id", ondelete="SET NULL"), nullable=True
    )
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(20), default=Status.DRAFT.value)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    prevent_duplicates: Mapped[bool] = mapped_column(Boolean, default=True)
    # Staff one-off messages to a single contact: tracked, but not listed among mailings.
    one_off: Mapped[bool] = mapped_column(Boolean, default=False)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    send_at_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    send_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    utm_source: Mapped[str] = mapped_column(String(100), default="")
    utm_medium: Mapped[str] = mapped_column(String(100), default="")
    utm_campaign: Mapped[str] = mapped_column(String(100), default="")
    # Chains: a follow-up step is sent chain_delay_days after its parent finished.
    chain_parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailings.id", ondelete="CASCADE"), nullable=True
    )
    chain_step: Mapped[int] = mapped_column(Integer, default=0)
    chain_delay_days: Mapped[int] = mapped_column(Integer, default=0)
    chain_condition: Mapped[str] = mapped_column(String(20), default="all")  # all|openers|non_openers
    copied_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailings.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Time spent Interrupted is not sending time: the current interruption's start, and the
    # seconds of the interruptions already resumed or canceled.
    interrupted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    interrupted_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Transactional sends through the API: the caller's idempotency key and the token used.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    api_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"), nullable=True
    )
    # A/B test of subjects/from-names (rows in mailing_variants): the share of the eligible
    # audience that tests (percent, 0 = no test), how long to wait, what wins (open | click),
    # and the decision once made (auto | staff).
    ab_share: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ab_wait_minutes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ab_metric: Mapped[str] = mapped_column(String(10), default="open", server_default="open")
    ab_winner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ab_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ab_decided_by: Mapped[str] = mapped_column(String(20), default="", server_default="")
    # Send window in the organisation's zone: minutes after midnight (None = no window) and
    # weekdays as a bit mask (Monday = 1 ... Sunday = 64). `local_delivery`: send_at's wall
    # clock time is reached in each contact's own zone, recipients released zone by zone.
    window_start_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_end_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_days: Mapped[int] = mapped_column(Integer, default=127, server_default="127")
    local_delivery: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A resend of another mailing to part of its recipients: non_openers | deferred_soft.
    resend_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailings.id", ondelete="SET NULL"), nullable=True
    )
    resend_audience: Mapped[str] = mapped_column(String(20), default="", server_default="")

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    email_type: Mapped[EmailType | None] = relationship()

    __table_args__ = (
        Index("ix_mailings_status_queued", "status", "queued_at"),
        Index("ix_mailings_chain", "chain_parent_id", "chain_step"),
    )

    @property
    def status_enum(self) -> Status:
        return Status(self.status)


class MailingVersion(db.Model):  # type: ignore[name-defined,misc]
    """The template as it was frozen when sending started: what every recipient was rendered from."""

    __tablename__ = "mailing_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_mailing_versions_mailing", "mailing_id"),)


class MailingCounter(db.Model):  # type: ignore[name-defined,misc]
    """Totals kept as named counters, updated in the same transaction as the responses they count.

    Names: "response:<response>" holds how many recipients currently have that response; other
    names ("handed_off", "opens", "clicks", "opened_unique", ...) are cumulative.
    """

    __tablename__ = "mailing_counters"

    mailing_id: Mapped[int] = mapped_column(
        ForeignKey("mailings.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Recipient(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True
    )
    address: Mapped[str] = mapped_column(String(320))
    response: Mapped[str] = mapped_column(String(20), default=Response.PLANNED.value)
    response_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Unknown set by crash recovery may still be replaced by a later event
    # (docs/ARCHITECTURE.md, "Priority and finality").
    crash_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str] = mapped_column(Text, default="")
    # Why it failed, for a bounce or a block: a bounce reason (app/domain/bounces.py), else "".
    reason: Mapped[str] = mapped_column(String(30), default="", server_default="")
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    machine_opens: Mapped[int] = mapped_column(Integer, default=0)
    machine_clicks: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    batch_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    handed_off_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The merge data the message was rendered with, so the exact message can be rebuilt.
    merge_data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    version_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailing_versions.id", ondelete="SET NULL"), nullable=True
    )
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Deferred (refused for now by the SMTP server): when it is tried next (None while a batch
    # holds it), when the first refusal came, and how many attempts were refused so far.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_deferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The A/B variant this recipient belongs to (None: no test, or the winner's remainder
    # before the decision), and when a send window or local-time delivery releases it.
    variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("mailing_variants.id", ondelete="SET NULL"), nullable=True
    )
    release_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        # Audience tabs and their keyset pagination, at a million rows per mailing.
        Index("ix_recipients_mailing_response", "mailing_id", "response", "id"),
        # The claim's deferred recipients that are due.
        Index("ix_recipients_mailing_due", "mailing_id", "response", "next_attempt_at"),
        Index("ix_recipients_mailing_address", "mailing_id", "address"),
        Index("ix_recipients_batch", "batch_id"),
        Index("ix_recipients_contact", "contact_id", "id"),
    )


class SendBatch(db.Model):  # type: ignore[name-defined,misc]
    """A claimed slice of a mailing's recipients: the unit a worker sends and recovery settles."""

    __tablename__ = "send_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(20), default="claimed")  # claimed | done | settled
    worker: Mapped[str] = mapped_column(String(200), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    # How far into the batch (in id order) hand-offs may have gone: raised, and committed, before
    # each stretch of sends; recovery treats rows beyond it as never handed off.
    handoff_reach: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_send_batches_state", "state", "mailing_id"),)


class ResponseEvent(db.Model):  # type: ignore[name-defined,misc]
    """One entry of a recipient's timeline; kept whether or not it changed the response."""

    __tablename__ = "response_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id", ondelete="CASCADE"))
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))  # a Response value, or open / click
    source: Mapped[str] = mapped_column(String(30))  # smtp, tracking, sendgrid, mailgun, dsn, ...
    provider_event_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        UniqueConstraint("source", "provider_event_id", name="uq_response_events_provider_event"),
        Index("ix_response_events_recipient", "recipient_id", "id"),
        Index("ix_response_events_mailing_time", "mailing_id", "kind", "occurred_at"),
    )


class TrackedLink(db.Model):  # type: ignore[name-defined,misc]
    """A link of a mailing; click tokens carry its id so the target is never taken from the URL."""

    __tablename__ = "tracked_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_tracked_links_mailing", "mailing_id", "position"),)


class Provider(db.Model):  # type: ignore[name-defined,misc]
    """An outgoing mail transport: an SMTP relay or the local capture server."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="smtp")  # smtp | capture
    host: Mapped[str] = mapped_column(String(255), default="127.0.0.1")
    port: Mapped[int] = mapped_column(Integer, default=25)
    security: Mapped[str] = mapped_column(String(10), default="none")  # none | starttls | ssl
    username: Mapped[str] = mapped_column(String(255), default="")
    password: Mapped[str] = mapped_column(String(255), default="")
    rate_per_second: Mapped[float] = mapped_column(default=0.0)
    # A provider that reports delivery by webhook: silence for 48 h means Unknown, not Delivered.
    reports_events: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # SMTP connections one worker opens to this provider and sends a batch over at once.
    connections: Mapped[int] = mapped_column(Integer, default=4, server_default="4")


class Setting(db.Model):  # type: ignore[name-defined,misc]
    """Admin-editable settings; a missing key falls back to the environment configuration."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class DkimKey(db.Model):  # type: ignore[name-defined,misc]
    """A sending domain's DKIM signing key. The private key is only read to sign; pages show
    the public key as the DNS record to publish."""

    __tablename__ = "dkim_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)  # lower case, ASCII (xn--) form
    selector: Mapped[str] = mapped_column(String(200))
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(Text)  # base64 DER, the record's p= tag
    bits: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(20), default="generated")  # generated | uploaded
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailingVariant(db.Model):  # type: ignore[name-defined,misc]
    """One subject (and from-name) of a mailing's A/B test."""

    __tablename__ = "mailing_variants"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)  # 0 = A, 1 = B, ...
    subject: Mapped[str] = mapped_column(String(500), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (UniqueConstraint("mailing_id", "position", name="uq_mailing_variants_position"),)


class Conversion(db.Model):  # type: ignore[name-defined,misc]
    """A transaction attributed to the mailing whose link the contact clicked last before it."""

    __tablename__ = "conversions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("transactions.id", ondelete="CASCADE"), unique=True
    )
    mailing_id: Mapped[int] = mapped_column(ForeignKey("mailings.id", ondelete="CASCADE"))
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id", ondelete="CASCADE"))
    clicked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_conversions_mailing", "mailing_id"),)


class ApiToken(db.Model):  # type: ignore[name-defined,misc]
    """A named API credential: only its SHA-256 is kept; scopes limit what it may call."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), default="")  # shown to tell tokens apart
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    rate_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Suppression(db.Model):  # type: ignore[name-defined,misc]
    """An erased contact's address, kept only as a SHA-256 so no import can bring it back."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(50), default="erased")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(db.Model):  # type: ignore[name-defined,misc]
    """An outbound webhook: where response events are POSTed, signed with `secret`.

    `cursor_event_id` is the last response event handed to a delivery, so events reach an
    endpoint in order without anything in the ingestion path waiting on it."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    event_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_reason: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):  # type: ignore[name-defined,misc]
    """One signed POST of a run of events to an endpoint, retried with backoff until it lands."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    first_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class WebhookAttempt(db.Model):  # type: ignore[name-defined,misc]
    """One try of a delivery: what the endpoint answered and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(500), default="")

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)


class QuotaUsage(db.Model):  # type: ignore[name-defined,misc]
    """Messages handed off per calendar month, for the monthly sending quota."""

    __tablename__ = "quota_usage"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class ImportJob(db.Model):  # type: ignore[name-defined,misc]
    """A contacts CSV import: progress and the rows it refused, with their line numbers."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | done | failed
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


__all__ = [
    "ApiToken",
    "BigId",
    "Conversion",
    "Contact",
    "ContactList",
    "DkimKey",
    "EmailType",
    "ImportJob",
    "ListMember",
    "Mailing",
    "MailingCounter",
    "MailingList",
    "MailingVariant",
    "MailingVersion",
    "Provider",
    "QuotaUsage",
    "Recipient",
    "ResponseEvent",
    "SendBatch",
    "Setting",
    "Suppression",
    "Transaction",
    "TrackedLink",
    "TypeOptOut",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "utcnow",
]

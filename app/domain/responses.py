"""Per-recipient responses: their priority (rank) and finality, and the one rule that decides
whether an incoming event changes a recipient's response (docs/ARCHITECTURE.md, "Priority and finality")."""

from __future__ import annotations

from enum import StrEnum


class Response(StrEnum):
    PLANNED = "planned"
    DEFERRED = "deferred"
    SENT = "sent"
    SOFT_BOUNCE = "soft_bounce"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    SPAM = "spam"
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    BLOCKED = "blocked"
    DROPPED = "dropped"
    DELIVERY_ERROR = "delivery_error"
    UNKNOWN = "unknown"
    DUPLICATE = "duplicate"
    DO_NOT_EMAIL = "do_not_email"
    TYPE_UNSUBSCRIBED = "type_unsubscribed"
    INVALID_ADDRESS = "invalid_address"
    INACTIVE = "inactive"
    CANCELED = "canceled"
    EXPIRED = "expired"


LABELS: dict[Response, str] = {
    Response.PLANNED: "Planned",
    Response.DEFERRED: "Deferred",
    Response.SENT: "Sent to provider",
    Response.SOFT_BOUNCE: "Soft bounce",
    Response.DELIVERED: "Delivered",
    Response.OPENED: "Opened",
    Response.CLICKED: "Clicked",
    Response.SPAM: "Spam complaint",
    Response.UNSUBSCRIBED: "Unsubscribed",
    Response.HARD_BOUNCE: "Hard bounce",
    Response.BLOCKED: "Blocked",
    Response.DROPPED: "Dropped",
    Response.DELIVERY_ERROR: "Delivery error",
    Response.UNKNOWN: "Unknown",
    Response.DUPLICATE: "Canceled (duplicate)",
    Response.DO_NOT_EMAIL: "Canceled (do not email)",
    Response.TYPE_UNSUBSCRIBED: "Canceled (unsubscribed by type)",
    Response.INVALID_ADDRESS: "Invalid address",
    Response.INACTIVE: "Suppressed (inactive 2 years)",
    Response.CANCELED: "Canceled",
    Response.EXPIRED: "Stopped (expired)",
}

RANK: dict[Response, int] = {
    Response.PLANNED: 0,
    Response.DEFERRED: 5,
    Response.SENT: 10,
    Response.SOFT_BOUNCE: 15,
    Response.DELIVERED: 20,
    Response.OPENED: 30,
    Response.CLICKED: 40,
    Response.SPAM: 50,
    Response.UNSUBSCRIBED: 60,
}

NOT_SENT: frozenset[Response] = frozenset({
    Response.DUPLICATE, Response.DO_NOT_EMAIL, Response.TYPE_UNSUBSCRIBED,
    Response.INVALID_ADDRESS, Response.INACTIVE, Response.CANCELED, Response.EXPIRED,
})
FAILURES: frozenset[Response] = frozenset({
    Response.HARD_BOUNCE, Response.BLOCKED, Response.DROPPED, Response.DELIVERY_ERROR,
    Response.UNKNOWN,
})
ENGAGEMENT: frozenset[Response] = frozenset({Response.OPENED, Response.CLICKED})
# Spam and Unsubscribed end the story whatever came before (except another final).
OVERRIDING: frozenset[Response] = frozenset({Response.SPAM, Response.UNSUBSCRIBED})
FINAL: frozenset[Response] = OVERRIDING | FAILURES | NOT_SENT
# What a failure may still replace: anything short of proof that the message was read.
_FAILURE_REPLACES: frozenset[Response] = frozenset({
    Response.PLANNED, Response.DEFERRED, Response.SENT, Response.SOFT_BOUNCE, Response.DELIVERED,
})
# Provider and tracking events prove a message went out (they lift an Unknown set by crash
# recovery). Delivery error is our own failure to hand over, so it proves nothing of the kind.
_EVIDENCE: frozenset[Response] = (
    frozenset(Response) - NOT_SENT
    - {Response.PLANNED, Response.DEFERRED, Response.UNKNOWN, Response.DELIVERY_ERROR}
)


def is_final(response: Response) -> bool:
    """A final response never changes (but see `decide` for Unknown after a crash)."""
    return response in FINAL


def decide(current: Response, incoming: Response, *, crash_unknown: bool = False) -> Response | None:
    """The recipient's new response if `incoming` replaces `current`, else None.

    - A not-sent response is only set by the sender, on a Planned or Deferred recipient (one the
      SMTP server refused for now and that waits for its next attempt).
    - Unknown set by crash recovery is replaced by any later evidence that the message went out.
    - Otherwise a final response never changes.
    - Spam complaint and Unsubscribed replace any non-final response.
    - A failure replaces Planned, Sent, Soft bounce and Delivered, not Opened or Clicked.
    - A non-final response replaces a lower-ranked one.
    """
    if incoming in NOT_SENT:
        return incoming if current in (Response.PLANNED, Response.DEFERRED) else None
    if current is Response.UNKNOWN and crash_unknown:
        return incoming if incoming in _EVIDENCE else None
    if current in FINAL or incoming is current:
        return None
    if incoming in OVERRIDING:
        return incoming
    if incoming in FAILURES:
        return incoming if current in _FAILURE_REPLACES else None
    if incoming is Response.PLANNED:
        return None
    return incoming if RANK[incoming] > RANK[current] else None

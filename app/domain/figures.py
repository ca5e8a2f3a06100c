"""The numbers a mailing's pages show, each with exactly one definition.

Every recipient has one current response, and every response belongs to exactly one of three
groups, so the groups always add up to the audience:

- **Waiting**: Planned, not handed off yet (a batch in flight still counts here until it is
  recorded), or Deferred: refused for now by the SMTP server (a 4xx reply), waiting for its next
  attempt.
- **Sent**: the message left Sendboard and reached the SMTP server or provider: accepted (Sent to
  provider, Delivered, Opened, Clicked, Spam complaint, Unsubscribed), answered with a bounce or a
  block (Soft bounce, Hard bounce, Blocked, Dropped), or possibly handed off when a worker died
  (Unknown). Bounced mail was sent.
- **Not sent**: never handed off, for one reason each: Canceled (duplicate), Canceled (do not
  email), Canceled (unsubscribed by type), Invalid address, Suppressed (inactive), Delivery error
  (the message could not be built), Canceled, Stopped (expired).

Opens and clicks are counted three ways, and every label says which: *opens* (every open, people
and machines), *people who opened* (recipients with at least one open not flagged as machine) and
*machine-only openers* (recipients whose only opens came from privacy proxies or scanners). The
Opened tab lists exactly the people who opened; the Clicked tab the people who clicked.

The names of the mailing counters these figures are read from are defined here too; the services
write them, this module reads them (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from app.domain.lifecycle import Status
from app.domain.responses import Response

# ---------------------------------------------------------------- counter names

RECIPIENTS = "recipients"  # rows written when the audience was prepared
ELIGIBLE = "eligible"  # of those, Planned when prepared (the denominator of "% sent")
HANDED_OFF = "handed_off"  # messages the SMTP server accepted at hand-off (grows only)
OPENS = "opens"  # every open, people and machines
OPENS_MACHINE = "opens_machine"
CLICKS = "clicks"
CLICKS_MACHINE = "clicks_machine"
OPENED_UNIQUE = "opened_unique"  # recipients with at least one open (any)
OPENED_UNIQUE_HUMAN = "opened_unique_human"  # recipients with at least one open by a person
CLICKED_UNIQUE = "clicked_unique"
CLICKED_UNIQUE_HUMAN = "clicked_unique_human"
DELIVERED_UNIQUE = "delivered_unique"  # recipients known delivered at some point


def response_counter(response: Response | str) -> str:
    """The counter holding how many recipients currently have `response`."""
    return f"response:{Response(response).value}"


# ---------------------------------------------------------------- the three groups

WAITING: tuple[Response, ...] = (Response.PLANNED, Response.DEFERRED)
SENT: tuple[Response, ...] = (
    Response.SENT, Response.DELIVERED, Response.OPENED, Response.CLICKED, Response.SOFT_BOUNCE,
    Response.HARD_BOUNCE, Response.BLOCKED, Response.DROPPED, Response.SPAM,
    Response.UNSUBSCRIBED, Response.UNKNOWN,
)
NOT_SENT: tuple[Response, ...] = (
    Response.DUPLICATE, Response.DO_NOT_EMAIL, Response.TYPE_UNSUBSCRIBED,
    Response.INVALID_ADDRESS, Response.INACTIVE, Response.DELIVERY_ERROR, Response.CANCELED,
    Response.EXPIRED,
)
# Sent, but no proof it reached the mailbox, or proof that it did not.
SENT_PROBLEMS: tuple[Response, ...] = (
    Response.SOFT_BOUNCE, Response.HARD_BOUNCE, Response.BLOCKED, Response.DROPPED,
    Response.UNKNOWN,
)


def group(response: Response) -> str:
    """The group of a response: waiting, sent or not_sent."""
    if response in WAITING:
        return "waiting"
    return "sent" if response in SENT else "not_sent"


# ---------------------------------------------------------------- audience tabs


class Only(StrEnum):
    """A tab that lists people by what they did rather than by their current response."""

    HUMAN_OPEN = "human_open"  # at least one open not flagged as machine
    HUMAN_CLICK = "human_click"


# Responses a recipient can hold after a person opened (or clicked): opening or clicking moves
# every lower response up, so only these (the final ones and the engaged ones) remain.
_AFTER_ENGAGEMENT: tuple[Response, ...] = (
    Response.SPAM, Response.UNSUBSCRIBED, Response.HARD_BOUNCE, Response.BLOCKED,
    Response.DROPPED, Response.DELIVERY_ERROR, Response.UNKNOWN,
)


@dataclass(frozen=True)
class Tab:
    key: str
    label: str
    responses: tuple[Response, ...]  # recipients are read per response through its index
    only: Only | None = None  # and, for these tabs, filtered to people who opened / clicked


TABS: tuple[Tab, ...] = (
    Tab("open", "Opened (people)", (Response.OPENED, Response.CLICKED, *_AFTER_ENGAGEMENT),
        Only.HUMAN_OPEN),
    Tab("click", "Clicked (people)", (Response.CLICKED, *_AFTER_ENGAGEMENT), Only.HUMAN_CLICK),
    Tab("bounce", "Bounced", (Response.SOFT_BOUNCE, Response.HARD_BOUNCE)),
    Tab("dropped", "Dropped", (Response.DROPPED,)),
    Tab("spam", "Spam / blocked", (Response.SPAM, Response.BLOCKED)),
    Tab("unsubscribed", "Unsubscribed", (Response.UNSUBSCRIBED,)),
    Tab("not_sent", "Not sent", NOT_SENT),
    Tab("all", "All", tuple(Response)),
)
TAB_BY_KEY: dict[str, Tab] = {tab.key: tab for tab in TABS}


# ---------------------------------------------------------------- the figures


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class Figures:
    """A mailing's figures, from its counters alone (O(1) at any audience size)."""

    responses: Mapping[Response, int]
    eligible: int
    opens: int
    opens_machine: int
    clicks: int
    clicks_machine: int
    openers: int  # any open
    openers_human: int
    clickers: int
    clickers_human: int
    delivered_known: int

    def count(self, *responses: Response) -> int:
        return sum(self.responses.get(r, 0) for r in responses)

    @property
    def audience(self) -> int:
        """Every recipient row: waiting + sent + not sent, always exactly."""
        return self.count(*Response)

    @property
    def waiting(self) -> int:
        return self.count(*WAITING)

    @property
    def sent(self) -> int:
        return self.count(*SENT)

    @property
    def not_sent(self) -> int:
        return self.count(*NOT_SENT)

    @property
    def not_sent_by_reason(self) -> dict[Response, int]:
        """Each reason with recipients, in a fixed order; the values add up to `not_sent`."""
        return {r: self.responses.get(r, 0) for r in NOT_SENT if self.responses.get(r, 0)}

    @property
    def sent_problems(self) -> dict[Response, int]:
        """Sent, then bounced, blocked, dropped or unknown (part of `sent`)."""
        return {r: self.responses.get(r, 0) for r in SENT_PROBLEMS if self.responses.get(r, 0)}

    @property
    def bounced(self) -> int:
        return self.count(Response.SOFT_BOUNCE, Response.HARD_BOUNCE)

    # Recipients whose current response is ... (the same numbers as the chart's bars).
    @property
    def soft_bounces(self) -> int:
        return self.count(Response.SOFT_BOUNCE)

    @property
    def hard_bounces(self) -> int:
        return self.count(Response.HARD_BOUNCE)

    @property
    def blocked(self) -> int:
        return self.count(Response.BLOCKED)

    @property
    def dropped(self) -> int:
        return self.count(Response.DROPPED)

    @property
    def complaints(self) -> int:
        return self.count(Response.SPAM)

    @property
    def unsubscribed(self) -> int:
        return self.count(Response.UNSUBSCRIBED)

    @property
    def blocked_or_spam(self) -> int:
        return self.count(Response.BLOCKED, Response.SPAM)

    @property
    def opens_human(self) -> int:
        return max(self.opens - self.opens_machine, 0)

    @property
    def clicks_human(self) -> int:
        return max(self.clicks - self.clicks_machine, 0)

    @property
    def openers_machine_only(self) -> int:
        return max(self.openers - self.openers_human, 0)

    @property
    def clickers_machine_only(self) -> int:
        return max(self.clickers - self.clickers_human, 0)

    @property
    def open_rate(self) -> float:
        """People who opened, per message sent."""
        return _rate(self.openers_human, self.sent)

    @property
    def click_rate(self) -> float:
        """People who clicked, per message sent."""
        return _rate(self.clickers_human, self.sent)

    def tab_count(self, tab: Tab) -> int:
        if tab.only is Only.HUMAN_OPEN:
            return self.openers_human
        if tab.only is Only.HUMAN_CLICK:
            return self.clickers_human
        return self.count(*tab.responses)

    @property
    def tab_counts(self) -> dict[str, int]:
        return {tab.key: self.tab_count(tab) for tab in TABS}


def figures(counters: Mapping[str, int]) -> Figures:
    """The figures from a mailing's counters; a missing counter reads as 0."""
    c = counters.get
    return Figures(
        responses={r: c(response_counter(r), 0) for r in Response},
        eligible=c(ELIGIBLE, 0),
        opens=c(OPENS, 0), opens_machine=c(OPENS_MACHINE, 0),
        clicks=c(CLICKS, 0), clicks_machine=c(CLICKS_MACHINE, 0),
        openers=c(OPENED_UNIQUE, 0), openers_human=c(OPENED_UNIQUE_HUMAN, 0),
        clickers=c(CLICKED_UNIQUE, 0), clickers_human=c(CLICKED_UNIQUE_HUMAN, 0),
        delivered_known=c(DELIVERED_UNIQUE, 0),
    )


# Counters a mailings-list row needs (fetched for every listed mailing in one query).
ROW_COUNTERS: tuple[str, ...] = (
    ELIGIBLE, OPENED_UNIQUE_HUMAN, CLICKED_UNIQUE_HUMAN,
    *(response_counter(r) for r in Response),
)


# ---------------------------------------------------------------- progress


def percent_sent(sent: int, eligible: int) -> float:
    """Sent of the recipients eligible when prepared, in percent (0 before there are any)."""
    return min(100.0, 100.0 * sent / eligible) if eligible > 0 else 0.0


PACE_WINDOW = 60.0  # seconds of recent progress the time left is estimated from


def pace(samples: Sequence[tuple[float, int]], now: float,
         window: float = PACE_WINDOW) -> float | None:
    """Recipients processed per second over the last `window` seconds, from (time, processed)
    samples in time order; None while there is no recent progress to judge from."""
    recent = [(t, n) for t, n in samples if now - window <= t <= now]
    if len(recent) < 2:
        return None
    (t0, n0), (t1, n1) = recent[0], recent[-1]
    if t1 - t0 < 1.0 or n1 <= n0:
        return None
    return (n1 - n0) / (t1 - t0)


def time_left(remaining: int, rate: float | None) -> timedelta | None:
    """How long the `remaining` recipients take at `rate` per second; None without a rate."""
    if rate is None or rate <= 0 or remaining <= 0:
        return None
    return timedelta(seconds=round(remaining / rate))


def sending_time(*, started: datetime | None, finished: datetime | None, now: datetime,
                 interrupted_seconds: int = 0,
                 interrupted_at: datetime | None = None) -> timedelta | None:
    """Time spent sending: from start to finish (or now), less the time spent Interrupted
    (the interruptions already over, and the current one from `interrupted_at`)."""
    if started is None:
        return None
    end = finished or now
    paused = timedelta(seconds=max(interrupted_seconds, 0))
    if interrupted_at is not None:
        paused += max(end - max(interrupted_at, started), timedelta(0))
    return max(end - started - paused, timedelta(0))


# ---------------------------------------------------------------- polling

FAST_POLL = 2  # seconds, while the mailing sends or a batch is still being recorded
SLOW_POLL = 30  # seconds, while responses still arrive after it ended
SLOW_POLL_FOR = timedelta(days=7)
_LIVE = frozenset({Status.PREPARING, Status.SENDING})
_ENDED = frozenset({Status.SENT, Status.CANCELED, Status.INTERRUPTED})


def poll_every(status: Status, *, batches_in_flight: bool, ended_at: datetime | None,
               now: datetime) -> int | None:
    """Seconds between refreshes of a mailing's page, or None when nothing can change any more.

    Fast while it prepares or sends, and after a cancel, interruption or finish for as long as a
    claimed batch is still being recorded (its last figures then come with the next refresh);
    slow for SLOW_POLL_FOR after it ended, while opens, clicks and bounces still arrive.
    """
    if status in _LIVE or (status in _ENDED and batches_in_flight):
        return FAST_POLL
    if status in _ENDED and ended_at is not None and now - ended_at < SLOW_POLL_FOR:
        return SLOW_POLL
    return None

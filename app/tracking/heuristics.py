"""Telling machine opens and scanner clicks from people (docs/ARCHITECTURE.md, "Machine opens and clicks").

Privacy proxies fetch every image of a message whether or not anyone reads it, and security
gateways follow every link right after delivery. Both prove delivery, not interest, so they are
flagged and counted apart.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

# Apple Mail Privacy Protection fetches every image on delivery and sends a bare "Mozilla/5.0",
# which no real browser or mail client does; crawlers name themselves. Google's and Yahoo's
# image proxies are not machines: they fetch when a reader opens the message (and hide who), so
# their opens count as people's, unless they come within the prefetch window below.
_PROXY_AGENTS = re.compile(r"Yahoo! Slurp", re.I)
_APPLE_MPP = "Mozilla/5.0"
_SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|urldefense|safelinks|symantec|messagelabs|trendmicro|"
    r"forcepoint|fortiguard|bot\b|spider|crawler|python-requests|go-http-client|headless",
    re.I,
)
# A fetch this soon after hand-off (or delivery) is the receiving system, not a person.
PREFETCH_WINDOW = timedelta(seconds=2)
SCANNER_WINDOW = timedelta(seconds=10)
# Clicks on different links closer than this look like a scanner walking every link.
LINK_BURST = timedelta(seconds=2)


def _soon_after(now: datetime, moments: tuple[datetime | None, ...], window: timedelta) -> bool:
    return any(m is not None and timedelta(0) <= now - m <= window for m in moments)


def is_machine_open(user_agent: str, now: datetime, *moments: datetime | None) -> bool:
    """A proxy or prefetch open: a proxy's user agent, or within ~2 s of hand-off/delivery."""
    agent = (user_agent or "").strip()
    if agent == _APPLE_MPP or _PROXY_AGENTS.search(agent):
        return True
    return _soon_after(now, moments, PREFETCH_WINDOW)


def is_scanner_click(
    method: str, user_agent: str, now: datetime, *moments: datetime | None,
    previous_click: tuple[datetime, int] | None = None, link_id: int | None = None,
) -> bool:
    """A link scanner: HEAD, a scanner's user agent, a click within seconds of hand-off or
    delivery, or a second link clicked within two seconds of another."""
    if method.upper() == "HEAD":
        return True
    if _SCANNER_AGENTS.search(user_agent or ""):
        return True
    if _soon_after(now, moments, SCANNER_WINDOW):
        return True
    if previous_click is not None:
        at, other_link = previous_click
        if other_link != link_id and timedelta(0) <= now - at <= LINK_BURST:
            return True
    return False

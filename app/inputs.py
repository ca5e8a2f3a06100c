"""Reading ids and numbers from requests: anything no row could have reads as absent.

Used as werkzeug's ``type=`` (``request.args.get("after", type=record_id)``): a ValueError makes
the value absent, so a malformed or out-of-range id in a query string or a form is ignored or a
404, never an overflow in the database.
"""

from __future__ import annotations

from app.domain.windows import is_zone

MAX_ID = 2**62  # above any id the database hands out, below its 64-bit integer limit
MAX_SEARCH = 200  # characters of a search box: an address or a name, not a document


def record_id(raw: str) -> int:
    """A positive id that fits the database; ValueError otherwise."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ValueError(f"not an id: {raw[:30]!r}")
    value = int(text)
    if not 0 < value < MAX_ID:
        raise ValueError(f"no row has id {value}")
    return value


def record_ids(values: list[str]) -> list[int]:
    """The ids among `values`, in order, dropping what is no id."""
    out = []
    for raw in values:
        try:
            out.append(record_id(raw))
        except ValueError:
            continue
    return out


def search_text(raw: str | None) -> str:
    """A search box's text, trimmed and cut to MAX_SEARCH characters."""
    return (raw or "").strip()[:MAX_SEARCH]


def posted_zone(raw: str | None) -> str:
    """A time zone name from a form: blank for none (the organisation's zone); ValueError, saying
    why, for a name that is no zone."""
    zone = (raw or "").strip()[:100]
    if zone and not is_zone(zone):
        raise ValueError(f"{zone[:64]!r} is not a time zone (e.g. Europe/Berlin)")
    return zone

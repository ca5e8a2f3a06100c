"""Bounce mail into response events: the local bounce Maildir and, in deployments, an IMAP box.

Each message is parsed by `app.domain.dsn` and applied through `app.services.responses`, with the
SHA-256 of its bytes as the provider event id: reading the same message twice (a crash between
applying and marking it read) changes nothing.
"""

from __future__ import annotations

import hashlib
import imaplib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app

from app.domain import dsn
from app.domain.bounces import Reason, Verdict
from app.domain.responses import Response
from app.extensions import db
from app.services.responses import AUTO_REPLY, DEFERRED, DELIVERED_REPORT, Event, apply_events
from app.services.tokens import read_recipient_token

log = logging.getLogger(__name__)
SOURCE = "dsn"
BATCH = 500


@dataclass(frozen=True)
class Bounce:
    """One message read from a mailbox, with what it is about."""

    report: dsn.Report
    event: Event | None


def to_event(raw: bytes, envelope: Sequence[str] = (), *,
             now: datetime | None = None) -> Bounce:
    """Parse one bounce message into the event it stands for (None for mail that is no bounce).

    We send one message per recipient, so a report naming several recipients is about ours
    through the verdict whose address is the returned message's To: (else its first failure);
    the event detail carries that verdict's reason and whether the address is permanently bad.
    """
    report = dsn.parse(raw, envelope)
    event_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if report.kind == "unsubscribe":
        # Only the signed token in the address counts: nothing else names the recipient.
        rid = read_recipient_token(report.token) if report.token else None
        if rid is None:
            return Bounce(report, None)
        return Bounce(report, Event(
            kind="unsubscribed", source="mailto", occurred_at=now or datetime.now(UTC),
            recipient_id=rid, provider_event_id=event_id,
            detail={"scope": "all", "via": "mailto"}))
    verdict = report.chosen
    kind = event_kind(report.kind, verdict)
    if kind is None or verdict is None:
        return Bounce(report, None)
    target: dict[str, Any] = {}
    rid = read_recipient_token(report.token) if report.token else None
    if rid is not None:
        target["recipient_id"] = rid
    elif report.original_message_id:
        target["message_id"] = report.original_message_id
    else:
        return Bounce(report, None)
    detail: dict[str, Any] = dict(verdict.detail())
    if len(report.verdicts) > 1:
        detail["recipients_in_report"] = len(report.verdicts)
    event = Event(kind=kind, source=SOURCE, occurred_at=now or datetime.now(UTC),
                  provider_event_id=event_id, detail=detail, **target)
    return Bounce(report, event)


def event_kind(report_kind: str, verdict: Verdict | None) -> str | None:
    """The response event kind for a report and the verdict about our recipient."""
    if verdict is None or report_kind == "other":
        return None
    if report_kind == "complaint" or verdict.reason is Reason.COMPLAINT:
        return Response.SPAM.value
    if verdict.reason is Reason.AUTO_REPLY:
        return AUTO_REPLY
    if verdict.reason is Reason.DELIVERED:
        return DELIVERED_REPORT
    if verdict.delayed or report_kind == "delay":
        return DEFERRED
    response = verdict.response
    return response.value if response is not None else None


def _apply(bounces: list[Bounce], counts: Counter[str]) -> None:
    events = [b.event for b in bounces if b.event is not None]
    counts["ignored"] += len(bounces) - len(events)
    if events:
        summary = apply_events(events).summary()
        # Committed here, chunk by chunk: the messages are marked read only once their events
        # are stored, and a long Maildir never holds the write lock for long.
        db.session.commit()
        for key in ("applied", "duplicates", "unmatched"):
            counts[key] += summary[key]
        counts["events"] += len(events)


# ---------------------------------------------------------------- Maildir


def bounce_dir() -> Path:
    """Where the capture server stores mail sent to the bounce domain."""
    return Path(current_app.config["INSTANCE_DIR"]) / "bounces"


def _envelopes(directory: Path) -> dict[str, list[str]]:
    """Envelope recipients per stored file, from the capture server's index."""
    out: dict[str, list[str]] = {}
    index = directory / "index.jsonl"
    if not index.exists():
        return out
    with open(index, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                to = entry.get("to") or entry.get("recipients") or []
                out[str(entry["file"])] = [str(r) for r in to]
            except (ValueError, KeyError, TypeError):
                continue  # a line being written right now
    return out


def process_maildir(directory: Path | str | None = None, *, limit: int = 5000) -> dict[str, int]:
    """Apply every new message of a Maildir and move it to cur/ (read); returns counts."""
    directory = Path(directory) if directory is not None else bounce_dir()
    new = directory / "new"
    counts: Counter[str] = Counter()
    if not new.is_dir():
        return dict(counts)
    (directory / "cur").mkdir(exist_ok=True)
    names = sorted(os.listdir(new))[:limit]
    if not names:
        return dict(counts)
    envelopes = _envelopes(directory)
    for start in range(0, len(names), BATCH):
        chunk = names[start:start + BATCH]
        bounces = []
        for name in chunk:
            try:
                raw = (new / name).read_bytes()
            except OSError:
                continue  # moved by another worker
            bounces.append(to_event(raw, envelopes.get(name, ())))
        _apply(bounces, counts)
        # Marked read only after the events committed: a crash before here re-reads them,
        # and their content hash makes the second reading a no-op.
        for name in chunk:
            try:
                os.rename(new / name, directory / "cur" / f"{name}:2,S")
            except OSError:
                pass
        counts["messages"] += len(chunk)
    log.info("bounce maildir %s: %s", directory, dict(counts))
    return dict(counts)


# ---------------------------------------------------------------- IMAP


def imap_settings() -> dict[str, Any] | None:
    """BOUNCE_IMAP_* from the app config or the environment; None when no host is set."""
    def get(name: str, default: str = "") -> str:
        value = current_app.config.get(name)
        return str(value) if value not in (None, "") else os.environ.get(name, default)

    host = get("BOUNCE_IMAP_HOST")
    if not host:
        return None
    return {"host": host, "port": int(get("BOUNCE_IMAP_PORT", "993")),
            "user": get("BOUNCE_IMAP_USER"), "password": get("BOUNCE_IMAP_PASSWORD"),
            "folder": get("BOUNCE_IMAP_FOLDER", "INBOX")}


def _connect(settings: dict[str, Any]) -> Any:
    return imaplib.IMAP4_SSL(settings["host"], settings["port"], timeout=30)


def poll_imap(settings: dict[str, Any] | None = None, *,
              connect: Callable[[dict[str, Any]], Any] = _connect,
              limit: int = 2000) -> dict[str, int]:
    """Apply the unseen messages of the bounce IMAP folder and flag them seen; returns counts."""
    settings = settings or imap_settings()
    counts: Counter[str] = Counter()
    if settings is None:
        return dict(counts)
    conn = connect(settings)
    try:
        conn.login(settings["user"], settings["password"])
        status, _ = conn.select(settings["folder"])
        if status != "OK":
            raise RuntimeError(f"IMAP folder {settings['folder']!r} cannot be selected")
        status, data = conn.uid("SEARCH", None, "UNSEEN")
        uids = (data[0] or b"").split()[:limit] if status == "OK" and data else []
        for start in range(0, len(uids), BATCH):
            chunk = uids[start:start + BATCH]
            bounces = []
            for uid in chunk:
                status, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                raw = next((p[1] for p in parts or [] if isinstance(p, tuple) and len(p) > 1),
                           None)
                if status == "OK" and isinstance(raw, bytes):
                    bounces.append(to_event(raw))
            _apply(bounces, counts)
            # Seen only after the events committed (see process_maildir).
            conn.uid("STORE", b",".join(chunk), "+FLAGS", "(\\Seen)")
            counts["messages"] += len(chunk)
    finally:
        try:
            conn.logout()
        except Exception:  # already closed by the server
            pass
    log.info("bounce imap %s/%s: %s", settings["host"], settings["folder"], dict(counts))
    return dict(counts)

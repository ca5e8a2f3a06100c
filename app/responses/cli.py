"""`sendboard simulate MAILING_ID`: realistic provider events for a sent mailing, posted over HTTP
to the real, authenticated webhook, so the whole ingestion path shows up on the dashboard.

Outcomes: about 95% delivered, the rest soft/hard bounces and a few blocks; opens spread over
hours (compressed by --speed), clicks from a third of the openers, a few complaints and
unsubscribes. Needs GENERIC_WEBHOOK_SECRET (generic format) or the webhook basic-auth user and
password (SendGrid format) to be set for both this command and the web app.
"""

from __future__ import annotations

import base64
import json
import random
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from sqlalchemy import select

from app.config import local_webhook_secret
from app.domain.responses import Response
from app.extensions import db
from app.models import Mailing, Recipient
from app.services.tokens import recipient_token
from app.webhooks.auth import generic_signature, setting


def plan(recipient_ids: list[int], rng: random.Random) -> list[tuple[float, int, str]]:
    """(seconds after the start, recipient id, event) for every simulated event, in time order."""
    events: list[tuple[float, int, str]] = []
    for rid in recipient_ids:
        roll = rng.random()
        first = rng.uniform(1, 60)
        if roll < 0.95:
            events.append((first, rid, "delivered"))
        elif roll < 0.97:
            events.append((first, rid, "soft_bounce"))
            continue
        elif roll < 0.995:
            events.append((first, rid, "hard_bounce"))
            continue
        else:
            events.append((first, rid, "blocked"))
            continue
        if rng.random() < 0.35:  # opens: most in the first hours, a long tail over two days
            at = first + rng.expovariate(1 / 5400)
            events.append((at, rid, "open"))
            if rng.random() < 0.3:
                events.append((at + rng.uniform(2, 300), rid, "open"))
            if rng.random() < 0.3:
                events.append((at + rng.uniform(5, 120), rid, "click"))
            if rng.random() < 0.01:
                events.append((at + rng.uniform(5, 600), rid, "unsubscribed"))
        if rng.random() < 0.002:
            events.append((first + rng.uniform(60, 7200), rid, "spam"))
    events.sort()
    return events


def _post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our own URL)
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise click.ClickException(
            f"the webhook answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        ) from exc
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from exc


def _generic_request(base: str, batch: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    secret = setting("GENERIC_WEBHOOK_SECRET") or local_webhook_secret(
        Path(current_app.config["INSTANCE_DIR"]), create=False)
    if not secret:
        raise click.ClickException("set GENERIC_WEBHOOK_SECRET (the web app needs the same value;"
                                   " `sendboard run` makes one under instance/ by itself)")
    body = json.dumps({"events": batch}).encode()
    ts = str(int(time.time()))
    return f"{base}/webhooks/generic", body, {
        "X-Sendboard-Timestamp": ts, "X-Sendboard-Signature": generic_signature(secret, ts, body)}


_SENDGRID = {"delivered": ("delivered", {}), "open": ("open", {}), "click": ("click", {}),
             "spam": ("spamreport", {}), "unsubscribed": ("unsubscribe", {}),
             "soft_bounce": ("bounce", {"type": "bounce", "status": "4.2.2",
                                        "reason": "452 4.2.2 mailbox full"}),
             "hard_bounce": ("bounce", {"type": "bounce", "status": "5.1.1",
                                        "reason": "550 5.1.1 user unknown"}),
             "blocked": ("bounce", {"type": "blocked", "status": "5.7.1",
                                    "reason": "554 5.7.1 blocked by reputation"})}


def _sendgrid_request(base: str, batch: list[dict[str, Any]]) -> tuple[str, bytes,
                                                                        dict[str, str]]:
    user = setting("SENDBOARD_WEBHOOK_BASIC_USER")
    password = setting("SENDBOARD_WEBHOOK_BASIC_PASSWORD")
    if not user or not password:
        raise click.ClickException("set SENDBOARD_WEBHOOK_BASIC_USER and _PASSWORD")
    events = []
    for e in batch:
        name, extra = _SENDGRID[e["event"]]
        events.append({"event": name, "timestamp": e["timestamp"], "sb_rid": e["rid"],
                       "sg_event_id": e["id"], "email": "simulated@example.invalid", **extra})
    cred = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"{base}/webhooks/sendgrid", json.dumps(events).encode(), {
        "Authorization": f"Basic {cred}"}


def register(app: Flask) -> None:
    register_bounces(app)

    @app.cli.command("simulate")
    @click.argument("mailing_id", type=int)
    @click.option("--speed", type=float, default=60.0, show_default=True,
                  help="Simulated seconds per real second (3600: an hour per second).")
    @click.option("--url", "base_url", default=None,
                  help="Where the web app listens (default: BASE_URL).")
    @click.option("--format", "fmt", type=click.Choice(["generic", "sendgrid"]),
                  default="generic", show_default=True)
    @click.option("--seed", type=int, default=None, help="Repeatable outcomes.")
    @click.option("--batch", type=int, default=500, show_default=True)
    def simulate_command(mailing_id: int, speed: float, base_url: str | None, fmt: str,
                         seed: int | None, batch: int) -> None:
        """Post realistic provider events for a sent mailing through the real webhook."""
        mailing = db.session.get(Mailing, mailing_id)
        if mailing is None:
            raise click.ClickException(f"no mailing {mailing_id}")
        ids = list(db.session.execute(
            select(Recipient.id).where(Recipient.mailing_id == mailing_id,
                                       Recipient.response == Response.SENT.value,
                                       Recipient.handed_off_at.is_not(None))
            .order_by(Recipient.id)).scalars())
        if not ids:
            raise click.ClickException("this mailing has no recipients sent to the provider")
        db.session.remove()  # the web app writes these rows; hold no connection meanwhile
        base = (base_url or current_app.config["BASE_URL"]).rstrip("/")
        events = plan(ids, random.Random(seed))
        run = f"{int(time.time())}-{random.Random().getrandbits(32):08x}"
        build = _generic_request if fmt == "generic" else _sendgrid_request
        click.echo(f"{len(events):,} events for {len(ids):,} recipients at {speed:g}x")
        started = time.monotonic()
        totals: dict[str, int] = {}
        pending: list[dict[str, Any]] = []
        for n, (offset, rid, kind) in enumerate(events):
            wait = offset / speed - (time.monotonic() - started)
            if wait > 0 and pending:
                totals = _send(build, base, pending, totals)
                pending = []
            if wait > 0:
                time.sleep(wait)
            pending.append({"event": kind, "timestamp": int(time.time()),
                            "rid": recipient_token(rid), "id": f"sim-{run}-{n}"})
            if len(pending) >= batch:
                totals = _send(build, base, pending, totals)
                pending = []
        if pending:
            totals = _send(build, base, pending, totals)
        click.echo(f"done: {totals}")


def _send(build: Any, base: str, batch: list[dict[str, Any]],
          totals: dict[str, int]) -> dict[str, int]:
    url, body, headers = build(base, batch)
    result = _post(url, body, headers)
    return {k: totals.get(k, 0) + int(v) for k, v in result.items()}


def register_bounces(app: Flask) -> None:
    @app.cli.group("bounces")
    def bounces_group() -> None:
        """Bounce mail and its verdicts."""

    @bounces_group.command("reclassify")
    @click.option("--apply", "apply_changes", is_flag=True,
                  help="Correct the responses and restore the contacts (default: only show).")
    def reclassify_command(apply_changes: bool) -> None:
        """Read every stored hard bounce again with the current classifier; list (and with
        --apply, correct) those it no longer finds permanently bad, restoring their contacts
        unless an unsubscribe, a complaint or another hard bounce still flags them."""
        from app.services.reclassify import reclassify

        outcome = reclassify(apply=apply_changes)
        db.session.commit()
        for change in outcome.changes:
            verdict = change.verdict
            if change.contact_restored:
                contact = "contact restored" if apply_changes else "contact would be restored"
                if change.kept:
                    contact += f" (still do-not-email: {', '.join(change.kept)})"
            elif change.kept:
                contact = f"contact kept: {', '.join(change.kept)}"
            else:
                contact = "no contact change"
            click.echo(f"recipient {change.recipient_id} <{change.address}> mailing "
                       f"{change.mailing_id}: hard_bounce -> {change.new.value} "
                       f"({verdict.reason.value}, {verdict.status or verdict.reply or '-'}); "
                       f"{contact}; {verdict.diagnostic[:120]}")
        verb = "corrected" if apply_changes else "to correct (run with --apply)"
        click.echo(f"{outcome.checked:,} hard bounces checked; {len(outcome.changes):,} {verb}; "
                   f"{outcome.contacts_restored:,} contacts "
                   f"{'restored' if apply_changes else 'to restore'}")

"""Event ingestion throughput, end to end through the real generic webhook.

Builds a mailing of 100,000 recipients in a temporary SQLite database, posts N events (default
200,000) in signed batches of 1,000 to /webhooks/generic, and prints events/s. The floor is the
same rows inserted into response_events with one executemany on an empty copy of the schema,
measured two ways: through SQLAlchemy Core (insert(table) with a list of rows, as the data layer
stores rows) and straight through the driver (the statement the service itself uses on SQLite,
with every value already formatted, so only SQLite's own work is timed).

    python bench/ingest.py [--events 200000] [--recipients 100000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select  # noqa: E402

from app import create_app  # noqa: E402
from app.config import TestConfig  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Contact, Mailing, Recipient, ResponseEvent  # noqa: E402
from app.services import totals  # noqa: E402
from app.services.responses import SQLITE_INSERT_EVENTS, _sqlite_time  # noqa: E402
from app.services.tokens import recipient_token  # noqa: E402
from app.webhooks.auth import generic_signature  # noqa: E402

SECRET = "bench-secret"


def build_app(directory: str):
    config = TestConfig(directory)
    config.GENERIC_WEBHOOK_SECRET = SECRET  # type: ignore[attr-defined]
    app = create_app(config)
    with app.app_context():
        db.create_all()
    return app


def seed(n: int) -> tuple[int, list[int]]:
    now = datetime.now(UTC)
    mailing = Mailing(name="Bench", status="sent", started_at=now)
    db.session.add(mailing)
    db.session.flush()
    db.session.execute(insert(Contact), [
        {"email": f"c{i}@example.org", "email_key": f"c{i}@example.org", "fields": {},
         "created_at": now, "updated_at": now} for i in range(n)])
    first = db.session.scalar(select(func.min(Contact.id)))
    db.session.execute(insert(Recipient), [
        {"mailing_id": mailing.id, "contact_id": first + i, "address": f"c{i}@example.org",
         "response": "sent", "message_id": f"r{i}.bench@sendboard.local", "handed_off_at": now}
        for i in range(n)])
    totals.bump(mailing.id, {"response:sent": n, "handed_off": n})
    db.session.commit()
    ids = list(db.session.scalars(select(Recipient.id).order_by(Recipient.id)))
    return mailing.id, ids


def make_events(ids: list[int], count: int, secret: str) -> list[dict]:
    """A realistic mix: deliveries first, then opens and clicks, a few bounces and complaints."""
    rng = random.Random(7)
    tokens = {rid: recipient_token(rid, secret) for rid in ids}
    base = int(time.time()) - 3600
    events = []
    i = 0
    while len(events) < count:
        rid = ids[i % len(ids)]
        round_ = i // len(ids)
        roll = rng.random()
        if round_ == 0:
            kind = ("delivered" if roll < 0.95 else "soft_bounce" if roll < 0.97
                    else "hard_bounce" if roll < 0.99 else "blocked")
        else:
            kind = ("open" if roll < 0.7 else "click" if roll < 0.95
                    else "spam" if roll < 0.953 else "unsubscribed" if roll < 0.96 else "open")
        events.append({"event": kind, "timestamp": base + round_ * 600 + rng.randint(0, 599),
                       "rid": tokens[rid], "id": f"bench-{i}"})
        i += 1
    return events


def floor(directory: str, rows: list[dict], recipients: int, *, driver: bool) -> float:
    app = build_app(directory)
    with app.app_context():
        seed(recipients)  # the same recipients, so foreign keys hold; not timed
        if driver:  # the service's own SQLite statement, values already in their stored form
            stamp = _sqlite_time(rows[0]["received_at"])
            values = [(r["recipient_id"], r["mailing_id"], r["kind"], r["source"],
                       r["provider_event_id"], _sqlite_time(r["occurred_at"]), stamp, 1, 0, None)
                      for r in rows]
        start = time.perf_counter()
        if driver:
            db.session.connection().exec_driver_sql(SQLITE_INSERT_EVENTS, values)
        else:
            db.session.execute(insert(ResponseEvent.__table__), rows)
        db.session.commit()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(tmp)
        with app.app_context():
            t0 = time.perf_counter()
            mailing_id, ids = seed(args.recipients)
            print(f"seeded {len(ids):,} recipients in {time.perf_counter() - t0:.1f}s")
            events = make_events(ids, args.events, app.config["SECRET_KEY"])
        bodies = []
        for start in range(0, len(events), args.batch):
            bodies.append(json.dumps({"events": events[start:start + args.batch]}).encode())
        client = app.test_client()
        applied = 0
        start = time.perf_counter()
        for body in bodies:
            ts = str(int(time.time()))
            resp = client.post("/webhooks/generic", data=body, content_type="application/json",
                               headers={"X-Sendboard-Timestamp": ts,
                                        "X-Sendboard-Signature": generic_signature(SECRET, ts,
                                                                                   body)})
            if resp.status_code != 200:
                raise SystemExit(f"webhook answered {resp.status_code}: {resp.data[:300]!r}")
            applied += resp.json["applied"]
        elapsed = time.perf_counter() - start
        with app.app_context():
            stored = db.session.scalar(select(func.count()).select_from(ResponseEvent))
            counters = totals.get(mailing_id)
        assert stored == len(events), (stored, len(events))
        rate = len(events) / elapsed
        print(f"{rate:,.0f} events/s end to end ({len(events):,} events, {applied:,} applied, "
              f"batches of {args.batch}, {elapsed:.1f}s); opens {counters.get('opens', 0):,}")

        now = datetime.now(UTC)
        rows = [{"recipient_id": ids[i % len(ids)], "mailing_id": mailing_id, "kind": e["event"],
                 "source": "generic", "provider_event_id": e["id"],
                 "occurred_at": datetime.fromtimestamp(e["timestamp"], UTC),
                 "received_at": now, "applied": True, "machine": False, "detail": None}
                for i, e in enumerate(events)]
    for driver, label in ((False, "SQLAlchemy Core executemany"), (True, "driver executemany")):
        with tempfile.TemporaryDirectory() as tmp2:
            floor_rate = len(rows) / floor(tmp2, rows, args.recipients, driver=driver)
        print(f"{floor_rate:,.0f} events/s floor ({label} into response_events); "
              f"end to end is {rate / floor_rate:.0%} of it")


if __name__ == "__main__":
    main()

"""Outbound webhook delivery while events are being ingested.

One process ingests response events through the response service at a steady rate (default
5,000 events/s, batches of 500) into a temporary SQLite database; a second process does what a
worker does for outbound webhooks: the periodic tick every 2 seconds (the pump that gathers
events into deliveries of up to 500) and the delivery jobs (signed POSTs, one endpoint's
deliveries oldest first). A loopback HTTP receiver in this process checks every signature and
notes when each event arrives. Printed: the ingestion rate reached, events delivered per second,
and the lag from an event's ingestion to its arrival at the receiver (target: under 10 s), and
whether every event arrived once and in order.

    python bench/webhooks_out.py [--rate 5000] [--seconds 30] [--recipients 20000] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from app import create_app  # noqa: E402
from app.config import TestConfig  # noqa: E402
from app.domain import webhooks_out as rules  # noqa: E402
from app.extensions import db  # noqa: E402
from bench import ingest as ingest_bench  # noqa: E402

TARGET_LAG_SECONDS = 10.0
KINDS = ["delivered", "open", "click", "open", "delivered"]


def build_app(directory: str) -> Any:
    config = TestConfig(directory)
    config.SENDBOARD_WEBHOOKS_ALLOW_PRIVATE = True  # type: ignore[attr-defined]
    return create_app(config)


def seed(n: int) -> list[int]:
    """A sent mailing of n recipients (as the ingestion bench seeds it); their ids."""
    return ingest_bench.seed(n)[1]


def ingest(directory: str, recipient_ids: list[int], rate: int, seconds: float,
           batch: int, out: Any) -> None:
    """Apply `rate` events per second for `seconds`, in batches, on a steady clock."""
    from app.services.responses import Event, apply_events

    app = build_app(directory)
    total = int(rate * seconds)
    done = 0
    started = time.monotonic()
    with app.app_context():
        while done < total:
            due = started + done / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            n = min(batch, total - done)
            now = datetime.now(UTC)
            apply_events([Event(kind=KINDS[(done + i) % len(KINDS)], source="bench",
                                occurred_at=now,
                                recipient_id=recipient_ids[(done + i) % len(recipient_ids)])
                          for i in range(n)])
            db.session.commit()  # apply_events leaves the commit to its caller
            done += n
    out.put((done, time.monotonic() - started))


def worker(directory: str, stop: Any, tick_every: float, role: str) -> None:
    """One worker process: "both" runs the periodic tick (the pump) and then the delivery jobs
    it would enqueue, as a single worker does; "tick" only pumps, "deliver" only delivers (two
    workers, as with `sendboard run --workers 2`)."""
    from app.services import outbound
    from jobs.outbound import deliver_due, pump_all

    app = build_app(directory)
    with app.app_context():
        while True:
            stopping = stop.is_set()
            slot = time.monotonic()
            if role in ("both", "tick"):
                pump_all()
            if role in ("both", "deliver"):
                for endpoint_id in outbound.endpoints_due():
                    while deliver_due(endpoint_id):
                        pass
            if stopping:
                break
            wait = tick_every if role != "deliver" else 0.05
            time.sleep(max(0.0, wait - (time.monotonic() - slot)))


class Receiver:
    def __init__(self, secret: str) -> None:
        self.arrivals: list[tuple[int, float, float]] = []  # event id, occurred, arrived
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                ok = rules.verify(secret, self.headers.get(rules.TIMESTAMP_HEADER, ""), body,
                                  self.headers.get(rules.SIGNATURE_HEADER, ""), arrived)
                events = json.loads(body)["events"]
                with receiver.lock:
                    receiver.bad_signatures += not ok
                    receiver.arrivals.extend(
                        (e["id"], datetime.fromisoformat(e["occurred_at"]).timestamp(), arrived)
                        for e in events)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000, help="events ingested per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--tick", type=float, default=2.0, help="seconds between pumps")
    parser.add_argument("--drain", type=int, default=0,
                        help="then also time one worker draining a backlog of this many events")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1,
                        help="1: tick and deliveries in one worker; 2: one worker each")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="sb-bench-webhooks-")
    app = build_app(directory)
    with app.app_context():
        db.create_all()
        recipient_ids = seed(args.recipients)
        from app.services import outbound

        endpoint = outbound.create_endpoint(name="bench", url="http://127.0.0.1:1/")
        db.session.commit()
        secret, endpoint_id = endpoint.secret, endpoint.id
    receiver = Receiver(secret)
    with app.app_context():
        endpoint = db.session.get(outbound.WebhookEndpoint, endpoint_id)
        endpoint.url = receiver.url
        db.session.commit()
        db.session.remove()
        db.engine.dispose()  # no connection crosses the fork

    ctx = mp.get_context("fork")
    stop, results = ctx.Event(), ctx.Queue()
    roles = ["both"] if args.workers == 1 else ["tick", "deliver"]
    deliverers = [ctx.Process(target=worker, args=(directory, stop, args.tick, role))
                  for role in roles]
    ingester = ctx.Process(target=ingest, args=(directory, recipient_ids, args.rate,
                                                args.seconds, args.batch, results))
    started = time.monotonic()
    for p in deliverers:
        p.start()
    ingester.start()
    ingested, ingest_time = results.get()
    ingester.join()
    ingest_end = time.monotonic()
    # Let the deliveries catch up (at most a minute), then stop the worker.
    while time.monotonic() - ingest_end < 60:
        with receiver.lock:
            if len(receiver.arrivals) >= ingested:
                break
        time.sleep(0.2)
    caught_up = time.monotonic() - ingest_end
    stop.set()
    for p in deliverers:
        p.join()
    total_time = time.monotonic() - started

    ids = [a[0] for a in receiver.arrivals]
    lags = sorted(arrived - occurred for _, occurred, arrived in receiver.arrivals)
    in_order = ids == sorted(ids) and len(set(ids)) == len(ids)
    delivered_rate = len(ids) / max(ingest_time + caught_up, 1e-9)
    p50 = statistics.median(lags) if lags else float("nan")
    p95 = lags[int(0.95 * (len(lags) - 1))] if lags else float("nan")
    worst = lags[-1] if lags else float("nan")
    verdict = "meets" if worst < TARGET_LAG_SECONDS else "misses"
    load = os.getloadavg()
    print(f"workers={args.workers}; load average at the end {load[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"ingested {ingested:,} events in {ingest_time:.1f} s: {ingested / ingest_time:,.0f} "
          f"events/s (asked {args.rate:,}/s)")
    exact = in_order and len(ids) == ingested
    print(f"delivered {len(ids):,} events in {ingest_time + caught_up:.1f} s: "
          f"{delivered_rate:,.0f} events/s, "
          f"{'every event once and in order' if exact else 'LOST, REPEATED OR OUT OF ORDER'}, "
          f"{receiver.bad_signatures} bad signatures")
    print(f"lag ingestion -> receiver: median {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s "
          f"(target < {TARGET_LAG_SECONDS:.0f} s: {verdict}); caught up {caught_up:.1f} s after "
          f"ingestion stopped; run {total_time:.1f} s")
    if args.drain:
        drain(directory, recipient_ids, receiver, args.drain)


def drain(directory: str, recipient_ids: list[int], receiver: Receiver, n: int) -> None:
    """The delivery path's own capacity: `n` events recorded with no worker running, then one
    worker (tick and deliveries) drains them with nothing else writing."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    filler = ctx.Process(target=ingest, args=(directory, recipient_ids, 10**9, n / 10**9, 500,
                                              results))
    filler.start()
    results.get()
    filler.join()
    before = len(receiver.arrivals)
    stop = ctx.Event()
    started = time.monotonic()
    drainer = ctx.Process(target=worker, args=(directory, stop, 0.0, "both"))
    drainer.start()
    while len(receiver.arrivals) - before < n and time.monotonic() - started < 300:
        time.sleep(0.05)
    took = time.monotonic() - started
    got = len(receiver.arrivals) - before
    stop.set()
    drainer.join()
    print(f"backlog of {n:,} events drained by one worker in {took:.1f} s: {got / took:,.0f} "
          f"events/s delivered ({got:,} received)")


if __name__ == "__main__":
    main()

"""Outbound webhooks end to end against a loopback receiver: the pump, signatures as the README
tells receivers to check them, retries with backoff, giving up, disabling after 24 hours,
refused addresses, and every event delivered once and in order across a worker's death."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.domain import webhooks_out as rules
from app.extensions import db
from app.models import (
    AuditEntry,
    Recipient,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.services import outbound
from app.services.responses import Event, apply_events
from jobs import outbound as jobs
from tests.factories import make_sent_recipients

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
README = Path(__file__).resolve().parents[2] / "README.md"


class Receiver:
    """A loopback HTTP server that records each POST and answers the next status in `codes`."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(({k: v for k, v in self.headers.items()}, body))
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [e for _, body in self.requests for e in json.loads(body)["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def private_ok(app):
    app.config[outbound.ALLOW_PRIVATE_SETTING] = True
    return app


def make_recipients(n: int = 3) -> list[Recipient]:
    return make_sent_recipients(n, handed_off_at=T0)


def ingest(recipients: list[Recipient], kinds: list[str]) -> None:
    events = [Event(kind=k, source="generic", occurred_at=T0 + timedelta(seconds=i),
                    recipient_id=recipients[i % len(recipients)].id)
              for i, k in enumerate(kinds)]
    apply_events(events)
    db.session.commit()


def endpoint(url: str, kinds: list[str] | None = None) -> WebhookEndpoint:
    ep = outbound.create_endpoint(name="CRM", url=url, event_kinds=kinds)
    db.session.commit()
    return ep


def readme_verify() -> Any:
    """The verification function exactly as the README prints it."""
    text = README.read_text()
    block = re.search(r"#### Verifying a delivery.*?```python\n(.*?)```", text, re.S)
    assert block, "README lacks the verification recipe"
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)  # noqa: S102 - our own README's snippet
    return scope["verify"]


# ---------------------------------------------------------------- the pump


def test_pump_groups_new_events_and_moves_the_cursor(app, private_ok, receiver):
    rows = make_recipients()
    ingest(rows, ["delivered"])  # before the endpoint: not sent
    ep = endpoint(receiver.url, ["open", "click"])
    ingest(rows, ["open", "delivered", "click", "open"])
    made = jobs.pump_all()
    assert made == 1
    delivery = db.session.scalar(select(WebhookDelivery))
    body = json.loads(delivery.body)
    assert [e["kind"] for e in body["events"]] == ["open", "click", "open"]
    assert (delivery.first_event_id, delivery.last_event_id, delivery.events) == (2, 5, 3)
    first = body["events"][0]
    assert set(first) == {"id", "kind", "mailing_id", "recipient_id", "email", "occurred_at",
                          "detail"}
    assert first["email"] == "p0@example.org" and first["recipient_id"] == rows[0].id
    assert first["occurred_at"] == "2026-11-23T10:00:00+00:00"
    db.session.refresh(ep)
    assert ep.cursor_event_id == 5
    assert jobs.pump_all() == 0  # nothing new


def test_pump_splits_runs_and_waits_at_a_fresh_gap(app, private_ok, receiver):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"] * 7)
    assert outbound.pump_endpoint(ep.id, limit=3) is not None
    db.session.commit()
    assert outbound.pump_endpoint(ep.id, limit=3) is not None
    db.session.commit()
    counts = db.session.scalars(select(WebhookDelivery.events).order_by(WebhookDelivery.id))
    assert list(counts) == [3, 3]
    # A missing id (an insert not committed yet) holds the cursor until GAP_WAIT has passed.
    rows_after = [(9, T0)]
    assert rules.deliverable_up_to(7, rows_after, T0 + timedelta(seconds=1)) == 7
    assert rules.deliverable_up_to(7, rows_after, T0 + rules.GAP_WAIT) == 9


# ---------------------------------------------------------------- delivering


def test_delivery_is_signed_as_the_readme_says(app, private_ok, receiver):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open", "click"])
    jobs.pump_all()
    assert jobs.deliver_due(ep.id) == 1
    (headers, body), = receiver.requests
    verify = readme_verify()
    assert verify(ep.secret, headers, body)
    assert not verify(ep.secret + "x", headers, body)
    assert not verify(ep.secret, headers, body + b" ")
    stale = {**headers, "Sendboard-Timestamp": str(int(headers["Sendboard-Timestamp"]) - 301)}
    assert not verify(ep.secret, stale, body)
    delivery = db.session.scalar(select(WebhookDelivery))
    assert headers["Sendboard-Delivery"] == str(delivery.id)
    assert headers["Sendboard-Signature"].startswith("v1=")
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_failures_back_off_then_succeed(app, private_ok, receiver):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"])
    jobs.pump_all(now=T0)
    receiver.codes = [500, 503, 404]
    clock = [T0]
    waits = []
    for _ in range(4):
        delivery = outbound.claim_next(ep.id, clock[0])
        assert delivery is not None
        db.session.commit()
        outbound.attempt(delivery, now=lambda: clock[0])
        db.session.commit()
        if delivery.status == "pending":
            waits.append(delivery.next_attempt_at - clock[0])
            # Not due before its time; due at it.
            assert outbound.claim_next(ep.id, delivery.next_attempt_at - timedelta(seconds=1)) is None
            clock[0] = delivery.next_attempt_at
    assert waits == [timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10)]
    assert delivery.status == "delivered" and delivery.attempts == 4
    assert [c for c, in db.session.execute(select(WebhookAttempt.status_code)
                                          .order_by(WebhookAttempt.id))] == [500, 503, 404, 200]
    db.session.refresh(ep)
    assert ep.failing_since is None and ep.disabled_at is None
    assert len(receiver.requests) == 4


def test_backoff_schedule():
    assert [rules.retry_delay(n).total_seconds() for n in range(1, 8)] == [
        30, 120, 600, 1800, 3600, 3600, 3600]


def test_gives_up_and_disables_after_24_hours_of_failure(app, private_ok, receiver):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"])
    jobs.pump_all(now=T0)
    receiver.codes = [500] * 100
    now = T0
    attempts = 0
    while True:
        delivery = outbound.claim_next(ep.id, now)
        if delivery is None:
            break
        db.session.commit()
        outbound.attempt(delivery, now=lambda: now)  # noqa: B023 - called at once
        db.session.commit()
        attempts += 1
        if delivery.next_attempt_at is None:
            break
        now = delivery.next_attempt_at
    db.session.refresh(ep)
    assert delivery.status == "failed"
    # At 0, 30 s, 2.5 min, 12.5 min, 42.5 min, then hourly: the 29th, at 24 h 42.5 min, is the
    # first 24 hours after the first attempt.
    assert attempts == 5 + 24
    assert now - T0 >= timedelta(hours=24)
    assert ep.disabled_at is not None and "24 hours" in ep.disabled_reason
    assert db.session.scalar(select(func.count()).select_from(AuditEntry)
                             .where(AuditEntry.action == "webhook.disable")) == 1
    # A disabled endpoint takes no new events and sends nothing.
    ingest(rows, ["click"])
    assert jobs.pump_all() == 0 and outbound.endpoints_due(now + timedelta(days=1)) == []
    # Enabled again, it catches up from where its cursor stopped.
    outbound.enable_endpoint(ep)
    db.session.commit()
    receiver.codes = []
    assert jobs.pump_all() == 1
    jobs.deliver_due(ep.id)
    assert receiver.events()[-1]["kind"] == "click"


def test_endpoint_failing_yet_succeeding_now_and_then_stays(app, private_ok, receiver):
    fate = rules.after_failure(failed_attempts=3, first_attempt_at=T0,
                               now=T0 + timedelta(hours=23), failing_since=T0)
    assert not fate.give_up and not fate.disable_endpoint
    fate = rules.after_failure(failed_attempts=1, first_attempt_at=T0 + timedelta(hours=30),
                               now=T0 + timedelta(hours=30), failing_since=None)
    assert fate.failing_since == T0 + timedelta(hours=30) and not fate.disable_endpoint


# ---------------------------------------------------------------- where events may go


@pytest.mark.parametrize("url,addresses,why", [
    ("ftp://example.org/x", ["93.184.215.14"], "Only http"),
    ("http://user:pw@example.org/", ["93.184.215.14"], "no user name"),
    ("http://localhost:8080/", ["127.0.0.1"], "loopback"),
    ("http://intranet/", ["10.1.2.3"], "private"),
    ("http://metadata/", ["169.254.169.254"], "link-local"),
    ("http://v6/", ["::1"], "loopback"),
    ("http://mapped/", ["::ffff:192.168.0.1"], "private"),
    ("http://mixed.example/", ["93.184.215.14", "192.168.1.1"], "private"),
    ("http://nowhere.invalid/", [], "does not resolve"),
    ("https://[fe80::1]/", ["fe80::1"], "link-local"),
])
def test_refused_destinations(app, url, addresses, why):
    with pytest.raises(outbound.EndpointError, match=why):
        outbound.create_endpoint(name="x", url=url, resolver=lambda h, p: addresses)
    answer = outbound.post(url, b"{}", {}, resolver=lambda h, p: addresses)
    assert answer.status_code is None and why in answer.error


def test_public_destination_accepted_and_private_allowed_by_setting(app):
    ep = outbound.create_endpoint(name="x", url="https://hooks.example.com/in",
                                  resolver=lambda h, p: ["93.184.215.14"])
    assert ep.secret.startswith("whsec_") and len(ep.secret) > 40
    with pytest.raises(outbound.EndpointError):
        outbound.create_endpoint(name="x", url="http://127.0.0.1:9/",
                                 resolver=lambda h, p: ["127.0.0.1"])
    app.config[outbound.ALLOW_PRIVATE_SETTING] = True
    outbound.create_endpoint(name="x", url="http://127.0.0.1:9/",
                             resolver=lambda h, p: ["127.0.0.1"])


def test_refused_at_delivery_time_when_the_name_moves(app, private_ok, receiver):
    """A host that resolved to a public address at registration and to a private one later."""
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"])
    jobs.pump_all()
    app.config[outbound.ALLOW_PRIVATE_SETTING] = False
    delivery = outbound.claim_next(ep.id)
    db.session.commit()
    answer = outbound.attempt(delivery)
    db.session.commit()
    assert answer.status_code is None and "loopback" in answer.error
    assert receiver.requests == [] and delivery.status == "pending"


# ---------------------------------------------------------------- crashes


def test_every_event_once_and_in_order_across_a_worker_death(app, private_ok, receiver, redis_conn):
    from rq import SimpleWorker

    rows = make_recipients(5)
    ep = endpoint(receiver.url)
    kinds = ["delivered", "open", "click", "open", "unsubscribed"] * 30
    ingest(rows, kinds[:70])
    assert outbound.pump_endpoint(ep.id, limit=25)
    db.session.commit()
    jobs.pump_all()
    ingest(rows, kinds[70:])
    jobs.pump_all()
    events = db.session.scalars(select(WebhookDelivery.events).order_by(WebhookDelivery.id))
    assert list(events) == [25, 45, 80]
    # A worker claims the oldest delivery and dies before its POST.
    claimed = outbound.claim_next(ep.id)
    db.session.commit()
    assert claimed is not None
    assert jobs.deliver_due(ep.id) == 0  # its lease holds, and nothing overtakes it
    assert receiver.requests == [] and outbound.endpoints_due() == []
    # The lease runs out; the periodic tick finds the delivery due and enqueues the job.
    db.session.execute(WebhookDelivery.__table__.update().where(
        WebhookDelivery.id == claimed.id).values(next_attempt_at=datetime.now(UTC)
                                                 - timedelta(seconds=1)))
    db.session.commit()
    assert jobs.tick()["endpoints_due"] == 1
    SimpleWorker(["default"], connection=redis_conn).work(burst=True)
    db.session.expire_all()
    got = [e["id"] for e in receiver.events()]
    all_ids = list(range(1, len(kinds) + 1))
    assert got == all_ids  # every event, once, in order
    assert [json.loads(b)["events"][0]["id"] for _, b in receiver.requests] == [1, 26, 71]
    assert set(db.session.scalars(select(WebhookDelivery.status))) == {"delivered"}


def test_abandoned_delivery_job_is_replaced(app, redis_conn):
    from rq import Queue
    from rq.job import Job, JobStatus

    assert jobs.enqueue_endpoint(7, redis_conn)
    assert jobs.enqueue_endpoint(7, redis_conn)  # waiting: left alone
    queue = Queue("default", connection=redis_conn)
    assert queue.get_job_ids() == ["webhook-endpoint-7"]
    job = Job.fetch("webhook-endpoint-7", connection=redis_conn)
    queue.remove(job)
    job.set_status(JobStatus.STARTED)
    job.worker_name = "dead-worker"
    job.save()
    assert jobs.enqueue_endpoint(7, redis_conn)
    assert queue.get_job_ids() == ["webhook-endpoint-7"]


# ---------------------------------------------------------------- the log


def test_delivery_log_matches_the_attempts_table(app, private_ok, receiver):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"])
    jobs.pump_all()
    receiver.codes = [502]
    delivery = outbound.claim_next(ep.id)
    db.session.commit()
    outbound.attempt(delivery)
    db.session.commit()
    outbound.send_again(delivery)
    db.session.commit()
    jobs.deliver_due(ep.id)
    log, more = outbound.delivery_log(ep.id)
    assert more is None and len(log) == 1
    table = db.session.execute(select(WebhookAttempt.status_code, WebhookAttempt.latency_ms)
                               .order_by(WebhookAttempt.id)).all()
    assert [(a.status_code, a.latency_ms) for a in log[0].attempts] == [tuple(t) for t in table]
    assert [c for c, _ in table] == [502, 200]
    assert log[0].delivery.attempts == 2 and log[0].delivery.last_latency_ms == table[-1][1]


def test_a_run_taken_by_another_pump_meanwhile_is_not_delivered_twice(app, private_ok, receiver,
                                                                       monkeypatch):
    rows = make_recipients()
    ep = endpoint(receiver.url)
    ingest(rows, ["open"] * 4)
    real_body = rules.body

    def racing_body(events):  # another pump moves the cursor while this one encodes the run
        db.session.execute(WebhookEndpoint.__table__.update().where(
            WebhookEndpoint.id == ep.id).values(cursor_event_id=4))
        return real_body(events)

    monkeypatch.setattr(outbound.rules, "body", racing_body)
    assert outbound.pump_endpoint(ep.id) is None
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    db.session.refresh(ep)
    assert ep.cursor_event_id == 4


@pytest.mark.parametrize(("tail", "path"), [
    ("/hook?key=abc", "/hook?key=abc"), ("?key=abc", "/?key=abc"), ("", "/"),
    ("/in#section", "/in"), ("/a/b?x=1&y=2#f", "/a/b?x=1&y=2"),
])
def test_the_request_line_keeps_the_query_and_drops_the_fragment(app, private_ok, tail, path):
    """The URL's path and query go to the endpoint as written; a fragment never leaves."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{tail}"
        answer = outbound.post(url, b"{}", {"Content-Type": "application/json"})
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 204, answer
    assert seen == [path]


# ---------------------------------------------------------------- slow receivers


class Trickler:
    """A loopback TCP server that reads the request, then answers a complete 200 one byte every
    `gap` seconds, until its client hangs up."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.sent = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            seen = b""
            while b"\r\n\r\n" not in seen:
                seen += conn.recv(65536)
            head, _, body = seen.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            for byte in self.ANSWER:
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up and closed
                    return
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


def test_a_trickled_answer_fails_the_attempt_at_the_whole_exchange_limit(app, private_ok,
                                                                          monkeypatch):
    """Each byte comes well within the limit, but the whole answer would take 17 s: the attempt
    fails at the 1 s limit for the whole exchange, recorded and retried like any failure."""
    monkeypatch.setattr(outbound, "TIMEOUT_SECONDS", 1.0)
    trickler = Trickler(gap=0.3)
    assert len(Trickler.ANSWER) * trickler.gap > 17
    try:
        rows = make_recipients()
        ep = endpoint(trickler.url)
        ingest(rows, ["open"])
        jobs.pump_all(now=T0)
        delivery = outbound.claim_next(ep.id, T0)
        db.session.commit()
        answer = outbound.attempt(delivery, now=lambda: T0)
        db.session.commit()
    finally:
        trickler.close()
    assert answer.status_code is None
    assert answer.error == "no complete answer within 1 s"
    # Far from the whole answer came: a limit per read would have waited for all of it (17 s).
    assert trickler.sent < len(Trickler.ANSWER) // 2
    assert 1000 <= answer.latency_ms < 10000
    row = db.session.scalar(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id))
    assert (row.status_code, row.error) == (None, "no complete answer within 1 s")
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_error == "no complete answer within 1 s"
    assert delivery.next_attempt_at == T0 + timedelta(seconds=30)


def test_a_prompt_answer_within_the_limit_is_read_whole(app, private_ok, monkeypatch):
    """The same server with no pause between bytes: the deadline does not cut a timely answer."""
    monkeypatch.setattr(outbound, "TIMEOUT_SECONDS", 1.0)
    trickler = Trickler(gap=0.001)
    try:
        answer = outbound.post(trickler.url, b"{}", {"Content-Type": "application/json"})
    finally:
        trickler.close()
    assert (answer.status_code, answer.error) == (200, "")
    assert trickler.sent == len(Trickler.ANSWER)

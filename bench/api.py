"""Benchmark the REST API through real HTTP: bulk contact upserts and transaction records per second.

    python bench/api.py                       # 100,000 contacts, 100,000 transactions, SQLite
    python bench/api.py --contacts 50000 --transactions 20000 --clients 4

A server process is started on a fresh SQLite database with an embedded Redis for the token's
rate: the app under werkzeug's threaded server, as `sendboard run` serves it, or forking up to
--server-processes at once (standing in for several gunicorn workers). When SENDBOARD_TEST_PG_URL
is set the same runs again on PostgreSQL (its tables are dropped and created afresh). Clients post
bulk calls (--batch items each) from --clients threads; every request body is built and encoded
before the clock starts, so the figures are the server's (the clients share the machine):

- contacts created (new addresses), then the same contacts updated (a field changed);
- transactions recorded for those contacts, each with its own idempotency key, then the same
  calls again (all duplicates: nothing recorded);
- single-transaction calls, one per request, for the per-call figure.

Targets: >= 5,000 contacts/s and >= 2,000 transactions/s for bulk calls, printed beside.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONTACTS_TARGET = 5_000
TRANSACTIONS_TARGET = 2_000

SERVER = """
import logging, sys
from werkzeug.serving import WSGIRequestHandler, run_simple
from app import create_app
logging.getLogger("werkzeug").setLevel(logging.ERROR)
WSGIRequestHandler.protocol_version = "HTTP/1.1"
app = create_app()
processes = int(sys.argv[2])
run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=processes == 1, processes=processes,
           use_reloader=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(database_url: str, instance: Path) -> str:
    """Create the tables and a token with every scope; returns the token."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["SENDBOARD_INSTANCE"] = str(instance)
    from app import create_app
    from app.api.auth import SCOPES
    from app.extensions import db
    from app.services.api_tokens import MAX_RATE, create_token

    app = create_app()
    with app.app_context():
        if database_url.startswith("postgresql"):
            db.drop_all()
        db.create_all()
        secret = create_token("bench", list(SCOPES), rate_per_minute=MAX_RATE).secret
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return secret


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server stopped: " + (proc.stderr.read().decode() if proc.stderr else ""))
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def post(port: int, token: str, path: str, body: Any) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1{path}", data=data, method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def in_parallel(clients: int, jobs: list[Callable[[], dict[str, Any]]]) -> tuple[float, list[dict[str, Any]]]:
    """Run the jobs on `clients` threads; the elapsed seconds and the answers."""
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    queue = list(reversed(jobs))
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            with lock:
                answers.append(result)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, answers


def line(what: str, count: int, seconds: float, target: int | None, check: str) -> None:
    rate = count / seconds if seconds else 0.0
    aim = f"target >= {target:,}/s {'met' if rate >= target else 'MISSED'}" if target else "(informational)"
    print(f"  {what:<38} {count:>9,} in {seconds:6.2f} s = {rate:9,.0f}/s   {aim}   {check}", flush=True)


def run(database_url: str, label: str, args: argparse.Namespace) -> None:
    from app.runtime.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory() as tmp:
        instance = Path(tmp)
        redis = EmbeddedRedis(instance / "redis").start()
        env = {**os.environ, "REDIS_URL": redis.url, "DATABASE_URL": database_url,
               "SENDBOARD_INSTANCE": str(instance), "PYTHONPATH": str(REPO)}
        os.environ["REDIS_URL"] = redis.url
        token = prepare(database_url, instance)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(args.server_processes)],
                                env=env, cwd=str(REPO),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(port, proc)
            kind = "threaded" if args.server_processes == 1 else f"{args.server_processes} processes"
            print(f"[{label}] server pid {proc.pid} ({kind}), {args.clients} clients, "
                  f"{args.batch:,} items a call, load average {os.getloadavg()[0]:.1f}")
            n, batch = args.contacts, args.batch
            for phase, field in (("contacts created (bulk)", "a"), ("contacts updated (bulk)", "b")):
                bodies = [json.dumps({"contacts": [
                    {"email": f"bench{i}@example.org", "name": f"Bench {i}", "fields": {"v": field, "i": i},
                     "lists": [f"Bench {i % 3}"]} for i in range(s, min(s + batch, n))]}).encode()
                    for s in range(0, n, batch)]
                jobs = [(lambda b=b: post(port, token, "/contacts/bulk", b)) for b in bodies]
                seconds, answers = in_parallel(args.clients, jobs)
                done = sum(a["created"] + a["updated"] for a in answers)
                refused = sum(a["refused"] for a in answers)
                line(phase, done, seconds, CONTACTS_TARGET, f"refused {refused}")

            t = args.transactions
            for phase in ("transactions recorded (bulk)", "same keys again (bulk, duplicates)"):
                bodies = [json.dumps({"transactions": [
                    {"email": f"bench{i % n}@example.org", "occurred_at": "2026-01-02T03:04:05+01:00",
                     "amount": f"{i % 500}.{i % 100:02d}", "reference": f"order-{i}",
                     "idempotency_key": f"{label}-order-{i}"} for i in range(s, min(s + batch, t))]}).encode()
                    for s in range(0, t, batch)]
                jobs = [(lambda b=b: post(port, token, "/transactions/bulk", b)) for b in bodies]
                seconds, answers = in_parallel(args.clients, jobs)
                recorded = sum(a["recorded"] for a in answers)
                duplicates = sum(a["duplicates"] for a in answers)
                line(phase, recorded + duplicates, seconds, TRANSACTIONS_TARGET,
                     f"recorded {recorded:,}, duplicates {duplicates:,}")

            singles = args.singles
            bodies = [json.dumps({"contact_id": 1 + i % n, "occurred_at": "2026-02-01T10:00:00Z",
                                  "amount": "1.00"}).encode() for i in range(singles)]
            jobs = [(lambda b=b: post(port, token, "/transactions", b)) for b in bodies]
            seconds, answers = in_parallel(args.clients, jobs)
            line("transactions, one a call", len(answers), seconds, None,
                 f"recorded {sum(a['status'] == 'recorded' for a in answers):,}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=5_000, help="items a bulk call (at most 10,000)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--server-processes", type=int, default=1,
                        help="1: one threaded process (as `sendboard run`); N: werkzeug forks up to N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{Path(tmp) / 'bench.db'}", "sqlite", args)
    pg = os.environ.get("SENDBOARD_TEST_PG_URL")
    if pg:
        run(pg, "postgresql", args)


if __name__ == "__main__":
    main()

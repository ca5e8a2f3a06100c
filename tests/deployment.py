"""A whole deployment for the tests that prove the sending invariants with real parts: a
database (SQLite, and PostgreSQL when the test command started a cluster and set
SENDBOARD_TEST_PG_URL), an embedded Redis server, the capture SMTP server and worker processes,
with a seeded mailing of RECIPIENTS contacts and the checks every scenario ends with.

The fixtures `database_url` and `deployment` reach the test modules through
tests/jobs/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from app.runtime.redis_server import EmbeddedRedis
from tests.smtp_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RECIPIENTS = 5000
CONNECTIONS = 4  # SMTP connections per worker: each may leave its one message in flight Unknown


def _database_urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("SENDBOARD_TEST_PG_URL"):
        urls.append("postgresql")
    return urls


@pytest.fixture(params=_database_urls())
def database_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sendboard.db'}"
        return
    base = os.environ["SENDBOARD_TEST_PG_URL"]
    name = f"sb_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
            ), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


class Deployment:
    """A database, a Redis server, a capture SMTP server and worker processes, all real."""

    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.redis = EmbeddedRedis(tmp / "redis")
        self.smtp_port = free_port()
        self.capture_dir = tmp / "capture"
        self.capture: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SENDBOARD_INSTANCE": str(tmp),
            "SENDBOARD_CAPTURE_PORT": str(self.smtp_port),
            "SMTP_HOST": "",
            "BATCH_SIZE": "200",
            "SMTP_CONNECTIONS": str(CONNECTIONS),
            "SECRET_KEY": "invariant-tests",
            "PYTHONPATH": str(ROOT),
        }

    # -- services
    def start_redis(self) -> None:
        self.redis.start()
        self.env["REDIS_URL"] = self.redis.url
        os.environ["REDIS_URL"] = self.redis.url

    def start_capture(self) -> None:
        self.capture = subprocess.Popen(
            [sys.executable, "-m", "app.runtime.capture", "--dir", str(self.capture_dir),
             "--port", str(self.smtp_port)], env=self.env, cwd=ROOT,
        )
        deadline = time.monotonic() + 15
        import socket

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.smtp_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("capture server did not start")

    def stop_capture(self) -> None:
        if self.capture is not None:
            self.capture.send_signal(signal.SIGTERM)
            self.capture.wait(timeout=15)
            self.capture = None

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.worker"], env=self.env, cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=open(self.tmp / f"worker{len(self.workers)}.log", "wb"))
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.stop_capture()
        self.redis.stop()

    # -- the database, through a separate app of the test process
    def app(self):
        from app import create_app
        from app.config import Config

        os.environ.update({k: v for k, v in self.env.items() if k != "PYTHONPATH"})
        return create_app(Config())

    def seed(self) -> int:
        from app.extensions import db
        from app.models import Contact, ContactList, User
        from app.services import mailings

        app = self.app()
        with app.app_context():
            db.create_all()
            now = datetime.now(UTC)
            owner = User(email="owner@example.org", password_hash="x")
            lst = ContactList(name="Everyone")
            db.session.add_all([owner, lst])
            db.session.commit()
            db.session.execute(insert(Contact.__table__), [
                {"email": f"c{i}@example.org", "email_key": f"c{i}@example.org",
                 "name": f"C {i}", "fields": {}, "do_not_email": i % 97 == 0,
                 "do_not_email_reason": "", "valid": True, "invalid_reason": "",
                 "soft_bounce_mailings": 0, "last_transaction_at": now, "created_at": now,
                 "updated_at": now}
                for i in range(RECIPIENTS)
            ])
            db.session.execute(text(
                "INSERT INTO list_members (list_id, contact_id, added_at) "
                "SELECT :l, id, created_at FROM contacts"), {"l": lst.id})
            db.session.commit()
            mailing = mailings.create(
                owner_id=owner.id, name="Invariants", list_ids=[lst.id], subject="Hi {{ name }}",
                from_address="news@shop.example",
                html_body='<p>Hi {{ name }}</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
                text_body="Hi {{ name }}\nUnsubscribe: {{ unsubscribe_url }}",
            )
            mailings.send_now(mailing)
            mailing_id = mailing.id
            db.session.remove()
            db.engine.dispose()
        return mailing_id

    def status(self, mailing_id: int) -> tuple[str, Counter[str]]:
        from app.extensions import db
        from app.models import Mailing, Recipient

        app = self.app()
        with app.app_context():
            status = db.session.get(Mailing, mailing_id).status
            counts = Counter({r: n for r, n in db.session.execute(
                select(Recipient.response, func.count()).where(Recipient.mailing_id == mailing_id)
                .group_by(Recipient.response))})
            db.session.remove()
            db.engine.dispose()
        return status, counts

    def wait_for(self, mailing_id: int, statuses: set[str], timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.status(mailing_id)
            if status in statuses:
                return status
            time.sleep(0.5)
        raise AssertionError(f"mailing still {status} after {timeout:.0f} s")

    def handed_off(self, mailing_id: int) -> int:
        _, counts = self.status(mailing_id)
        return sum(n for r, n in counts.items() if r not in {"planned"})

    def check_invariants(self, mailing_id: int, *, max_unknown: int) -> Counter[str]:
        from app.extensions import db
        from app.models import Recipient
        from app.runtime.capture import CaptureStore

        received = CaptureStore(self.capture_dir).count_by_recipient()
        doubles = {a: n for a, n in received.items() if n > 1}
        assert not doubles, f"addresses that received two copies: {list(doubles)[:5]}"
        app = self.app()
        with app.app_context():
            rows = db.session.execute(
                select(Recipient.address, Recipient.response)
                .where(Recipient.mailing_id == mailing_id)).all()
            db.session.remove()
            db.engine.dispose()
        assert len(rows) == RECIPIENTS
        assert len({a for a, _ in rows}) == RECIPIENTS  # exactly one response each
        counts = Counter(r for _, r in rows)
        assert counts["planned"] == 0
        sent = {a for a, r in rows if r == "sent"}
        unknown = {a for a, r in rows if r == "unknown"}
        # Every recipient recorded as sent was received; nothing else was, but possibly the
        # ambiguous ones (the SMTP exchange may have completed before the crash).
        assert sent <= set(received)
        assert set(received) - sent <= unknown
        assert len(unknown) <= max_unknown
        assert counts["do_not_email"] == len(range(0, RECIPIENTS, 97))
        assert len(sent) + len(unknown) + counts["do_not_email"] == RECIPIENTS
        return counts


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Iterator[Deployment]:
    saved = dict(os.environ)  # the deployment points this process at its own services
    d = Deployment(tmp_path, database_url)
    d.start_redis()
    d.start_capture()
    try:
        yield d
    finally:
        d.stop()
        os.environ.clear()
        os.environ.update(saved)

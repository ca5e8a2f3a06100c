"""Sending throughput, end to end, against Postfix's smtp-sink.

    python bench/send_throughput.py [--recipients N] [--workers K] [--batch-size B]

For each worker count (default: 1, then 2) this builds a fresh SQLite database with N contacts in
one list and a mailing with a realistic HTML + text template, starts a Redis server, K real worker
processes (`python -m jobs.worker`) and sends the mailing to smtp-sink. It times send_now until the
mailing is Sent, checks that all N recipients were handed off (in the database and at the sink),
and reports each worker's peak RSS (VmHWM). Then it measures the floor: one smtplib connection
pushing the same number of pre-rendered messages (one real message, its bytes reused) into the
same sink. The last line is `ratio: X.XX`, the 1-worker pipeline rate over the floor rate.

`--deferring P` sends to a sink of its own (aiosmtpd) that answers 451 to the first attempt of
P% of the addresses; the backoff's minute is shortened to SENDBOARD_DEFER_UNIT_SECONDS (0.05 s by
default here) and every address must arrive exactly once in the end, none of them deferred for
good. (No floor in that mode.)

Needs smtp-sink (Debian's postfix package; installed with apt-get when missing and run as root).
`--profile DIR` also records each worker with py-spy (collapsed stacks, idle time included, in
DIR/workers<K>-w<i>.txt: feed them to flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-key"
SEED_CHUNK = 50_000

FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas",
         "Karin", "Lukas", "Mia", "Noah", "Olga", "Paul", "Rosa", "Simon", "Tina", "Zoë"]
LAST = ["Meier", "Schmidt", "Novak", "Dubois", "Rossi", "García", "Jensen", "Kowalski",
        "O'Brien", "Smith", "Andersson", "Horvat", "Silva", "Weber", "Lund"]

SUBJECT = "{{ name }}, our spring collection is here"
HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spring collection</title>
<style>
  body { margin: 0; padding: 0; background: #f4f4f7; font-family: Helvetica, Arial, sans-serif; }
  .wrap { max-width: 600px; margin: 0 auto; background: #ffffff; }
  .hero { padding: 32px 24px; background: #2d6a4f; color: #ffffff; }
  .btn { display: inline-block; padding: 12px 22px; background: #40916c; color: #ffffff;
         text-decoration: none; border-radius: 4px; font-weight: bold; }
  .item { padding: 16px 24px; border-bottom: 1px solid #eeeeee; }
  .foot { padding: 24px; font-size: 12px; color: #888888; text-align: center; }
</style>
</head>
<body>
<table role="presentation" class="wrap" width="100%" cellpadding="0" cellspacing="0">
  <tr><td class="hero">
    <h1 style="margin:0 0 8px 0;font-size:26px;">Hello {{ name }},</h1>
    <p style="margin:0;font-size:16px;line-height:24px;">Spring is here, and so is our new
    collection: lighter fabrics, brighter colours and a few old favourites back in stock.
    As a subscriber you get early access for the next 48 hours.</p>
  </td></tr>
  <tr><td style="padding:24px;text-align:center;">
    <a class="btn" href="https://shop.example.com/spring?ref=newsletter">Shop the collection</a>
  </td></tr>
  <tr><td class="item">
    <h2 style="margin:0 0 6px 0;font-size:18px;">Linen shirts, now in six colours</h2>
    <p style="margin:0;font-size:14px;line-height:21px;color:#444444;">Breathable, washable
    and cut a little longer than last year. Free alterations in every store.
    <a href="https://shop.example.com/p/linen-shirt">See the shirts</a></p>
  </td></tr>
  <tr><td class="item">
    <h2 style="margin:0 0 6px 0;font-size:18px;">The garden edit</h2>
    <p style="margin:0;font-size:14px;line-height:21px;color:#444444;">Planters, tools and
    seeds picked by our staff, with a guide to what to sow in April and May.
    <a href="https://shop.example.com/garden?utm_content=edit&amp;sort=new">Read the guide</a></p>
  </td></tr>
  <tr><td class="item">
    <h2 style="margin:0 0 6px 0;font-size:18px;">Members' weekend: 20% off</h2>
    <p style="margin:0;font-size:14px;line-height:21px;color:#444444;">Saturday and Sunday,
    online and in store, on everything except gift cards. Your code is waiting in your
    account, {{ name }}.
    <a href="https://shop.example.com/account/offers">Open my account</a></p>
  </td></tr>
  <tr><td class="foot">
    You receive this email because you subscribed at shop.example.com.<br>
    Shop Example Ltd, 12 Market Street, Springfield.<br>
    <a href="{{ unsubscribe_url }}">Unsubscribe</a> &middot;
    <a href="{{ preferences_url }}">Email preferences</a> &middot;
    <a href="https://shop.example.com/privacy">Privacy</a>
  </td></tr>
</table>
</body>
</html>
"""
TEXT = """Hello {{ name }},

Spring is here, and so is our new collection: lighter fabrics, brighter colours and a few old
favourites back in stock. As a subscriber you get early access for the next 48 hours.

Shop the collection: https://shop.example.com/spring?ref=newsletter

* Linen shirts, now in six colours: https://shop.example.com/p/linen-shirt
* The garden edit: https://shop.example.com/garden
* Members' weekend, 20% off: https://shop.example.com/account/offers

You receive this email because you subscribed at shop.example.com.
Shop Example Ltd, 12 Market Street, Springfield.
Unsubscribe: {{ unsubscribe_url }}
Email preferences: {{ preferences_url }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- smtp-sink


def smtp_sink_path() -> str:
    found = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink"
                                          if os.path.exists("/usr/sbin/smtp-sink") else None)
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("smtp-sink is missing: install Debian's postfix package (apt-get install postfix)")
    print("installing postfix for smtp-sink ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "postfix"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(found):
        sys.exit("postfix installed but smtp-sink not found")
    return found


class Sink:
    """smtp-sink on a free port; `received()` is its running message counter."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / "smtp-sink.out"
        args = [smtp_sink_path()]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += ["-c", f"127.0.0.1:{self.port}", "256"]
        self.proc = subprocess.Popen(args, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("smtp-sink did not start")

    def received(self) -> int:
        found = re.findall(rb"mesg=(\d+)", self.out.read_bytes())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DeferringSink:
    """An aiosmtpd sink that refuses for now (451) the first attempt of `percent`% of the
    addresses (chosen by a hash of the address) and counts every accepted copy per address."""

    def __init__(self, percent: int) -> None:
        import logging

        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self.percent = percent
        self.port = free_port()
        self.attempts: dict[str, int] = {}
        self.copies: dict[str, int] = {}
        self.deferred = 0
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001
                n = sink.attempts[address] = sink.attempts.get(address, 0) + 1
                if n == 1 and zlib_crc(address) % 100 < sink.percent:
                    sink.deferred += 1
                    return "451 4.3.0 Temporary failure, try again later"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
                for address in envelope.rcpt_tos:
                    sink.copies[address] = sink.copies.get(address, 0) + 1
                return "250 Message accepted"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def received(self) -> int:
        return sum(self.copies.values())

    def duplicates(self) -> int:
        return sum(1 for n in self.copies.values() if n > 1)

    def stop(self) -> None:
        self.controller.stop()


def zlib_crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


# ---------------------------------------------------------------- one pipeline run


@dataclass
class RunResult:
    workers: int
    seconds: float
    prepare_seconds: float
    sent: int
    at_sink: int
    peak_rss_kb: list[int]
    sample: tuple[str, bytes] | None  # (envelope from, bytes) of one real message

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


def _proc_status(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _env(tmp: Path, redis_url: str, sink_port: int, batch_size: int) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp / 'sendboard.db'}",
        "REDIS_URL": redis_url,
        "SENDBOARD_INSTANCE": str(tmp),
        "SENDBOARD_CAPTURE_PORT": str(sink_port),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(sink_port),
        "BATCH_SIZE": str(batch_size),
        "SECRET_KEY": SECRET,
        "SENDBOARD_ENV": "development",
    }


def _seed(n: int) -> int:
    """N contacts in one list and a draft mailing; returns the mailing id (app context active)."""
    from sqlalchemy import text

    from app.extensions import db
    from app.models import ContactList, User
    from app.services import mailings

    db.create_all()
    owner = User(email="owner@shop.example.com", password_hash="x")
    lst = ContactList(name="Newsletter")
    db.session.add_all([owner, lst])
    db.session.commit()
    stamp = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    rng = random.Random(1)
    names = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(997)]
    with db.engine.begin() as conn:
        sql = ("INSERT INTO contacts (email, email_key, name, fields, do_not_email, "
               "do_not_email_reason, valid, invalid_reason, soft_bounce_mailings, "
               "last_transaction_at, created_at, updated_at) "
               "VALUES (?, ?, ?, '{}', 0, '', 1, '', 0, ?, ?, ?)")
        for start in range(0, n, SEED_CHUNK):
            rows = []
            for i in range(start, min(n, start + SEED_CHUNK)):
                address = f"subscriber{i}@example.org"
                rows.append((address, address, names[i % 997], stamp, stamp, stamp))
            conn.exec_driver_sql(sql, rows)
        conn.execute(text("INSERT INTO list_members (list_id, contact_id, added_at) "
                          "SELECT :l, id, created_at FROM contacts"), {"l": lst.id})
    mailing = mailings.create(
        owner_id=owner.id, name="Spring collection", list_ids=[lst.id], subject=SUBJECT,
        from_address="news@shop.example.com", from_name="Shop Example", html_body=HTML,
        text_body=TEXT, utm_source="newsletter", utm_medium="email", utm_campaign="spring",
    )
    return mailing.id


def _sample_message() -> tuple[str, bytes]:
    """One recipient's real message, built by the engine's MessageBuilder."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import MailingVersion, Recipient
    from app.services.rendering import builder_for, merge_data, new_message_id
    from app.services.tokens import recipient_token

    version = db.session.execute(
        select(MailingVersion).order_by(MailingVersion.id.desc()).limit(1)).scalar_one()
    row = db.session.execute(select(Recipient).order_by(Recipient.id).limit(1)).scalar_one()
    builder = builder_for(version.id, version.content)
    built = builder.build(
        merge=merge_data("Anna Meier", row.address, {}), address=row.address,
        token=recipient_token(row.id, SECRET),
        message_id=new_message_id(row.id, version.content.get("domain") or "sendboard.local"),
        sent_at=datetime.now(UTC).replace(microsecond=0),
    )
    return built.envelope_from, built.data


def run_pipeline(n: int, workers: int, batch_size: int, sink: Sink | DeferringSink,
                 want_sample: bool,
                 profile_dir: Path | None) -> RunResult:
    from app.runtime.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmpdir:
        tmp = Path(tmpdir)
        redis = EmbeddedRedis(tmp / "redis").start()
        procs: list[subprocess.Popen[bytes]] = []
        spies: list[subprocess.Popen[bytes]] = []
        try:
            env = _env(tmp, redis.url, sink.port, batch_size)
            os.environ.update(env)
            from app import create_app
            from app.config import Config
            from app.extensions import db
            from app.services import mailings

            app = create_app(Config())
            t0 = time.monotonic()
            with app.app_context():
                mailing_id = _seed(n)
                db.session.remove()
            print(f"  seeded {n:,} contacts in {time.monotonic() - t0:.1f} s", flush=True)

            worker_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
            for i in range(workers):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "jobs.worker", "--name", f"bench-{workers}-{i}"],
                    env=worker_env, cwd=ROOT, start_new_session=True,
                    stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker{i}.log", "wb"),
                ))
            _wait_for_workers(redis.url, workers, procs)
            if profile_dir is not None:
                profile_dir.mkdir(parents=True, exist_ok=True)
                for i, p in enumerate(procs):
                    out = profile_dir / f"workers{workers}-w{i}.txt"
                    spies.append(subprocess.Popen(
                        [_py_spy(), "record", "--idle", "--format", "raw", "-r", "250",
                         "-o", str(out), "--pid", str(p.pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(1.0)

            at_sink_before = sink.received()
            with app.app_context():
                mailing = mailings.get(mailing_id)
                start = time.monotonic()
                mailings.send_now(mailing)
                db.session.remove()
            seconds, prepare_seconds = _wait_until_sent(tmp / "sendboard.db", mailing_id, start,
                                                        n, procs, tmp)
            rss = [_proc_status(p.pid, "VmHWM") for p in procs]
            time.sleep(0.3)  # the sink's counter line for the last message
            at_sink = sink.received() - at_sink_before
            sent = _count_sent(tmp / "sendboard.db", mailing_id)
            sample = None
            if want_sample:
                with app.app_context():
                    sample = _sample_message()
                    db.session.remove()
            with app.app_context():
                db.engine.dispose()
            return RunResult(workers, seconds, prepare_seconds, sent, at_sink, rss, sample)
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            redis.stop()


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(found):
        sys.exit("--profile needs py-spy (pip install py-spy)")
    return found


def _wait_for_workers(redis_url: str, k: int, procs: list[subprocess.Popen[bytes]]) -> None:
    from redis import Redis
    from rq import Worker

    conn = Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited at start")
        if len(Worker.all(connection=conn)) >= k:
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not register with Redis")


def _wait_until_sent(path: Path, mailing_id: int, start: float, n: int,
                     procs: list[subprocess.Popen[bytes]], tmp: Path) -> tuple[float, float]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    prepared_at = None
    deadline = start + 600 + n / 200
    try:
        while time.monotonic() < deadline:
            status = con.execute("SELECT status FROM mailings WHERE id = ?",
                                 (mailing_id,)).fetchone()[0]
            now = time.monotonic()
            if prepared_at is None and status not in ("preparing", "draft"):
                prepared_at = now
            if status == "sent":
                return now - start, (prepared_at or now) - start
            if status in ("interrupted", "canceled"):
                reason = con.execute("SELECT status_reason FROM mailings WHERE id = ?",
                                     (mailing_id,)).fetchone()[0]
                raise RuntimeError(f"mailing {status}: {reason}")
            if all(p.poll() is not None for p in procs):
                raise RuntimeError("every worker exited; see " + str(tmp / "worker0.log"))
            time.sleep(0.05)
    finally:
        con.close()
    raise RuntimeError("the mailing did not finish in time")


def _count_sent(path: Path, mailing_id: int) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(
            "SELECT count(*) FROM recipients WHERE mailing_id = ? AND response = 'sent' "
            "AND handed_off_at IS NOT NULL", (mailing_id,)).fetchone()[0])
    finally:
        con.close()


# ---------------------------------------------------------------- the floor


def run_floor(n: int, sink: Sink, envelope_from: str, data: bytes) -> float:
    """Messages per second for a bare smtplib loop over one connection (same bytes each time)."""
    before = sink.received()
    conn = smtplib.SMTP("127.0.0.1", sink.port, local_hostname="sendboard.local")
    conn.ehlo()
    start = time.monotonic()
    for i in range(n):
        conn.sendmail(envelope_from, [f"subscriber{i}@example.org"], data)
    seconds = time.monotonic() - start
    conn.quit()
    time.sleep(0.3)
    got = sink.received() - before
    if got != n:
        raise RuntimeError(f"floor: the sink counted {got} messages, expected {n}")
    return n / seconds


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: run with 1 and then 2)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--no-floor", action="store_true", help="skip the smtplib floor")
    parser.add_argument("--deferring", type=int, default=None, metavar="PERCENT",
                        help="a sink that answers 451 to the first attempt of PERCENT%% of the "
                             "addresses; each must arrive exactly once in the end")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record each worker with py-spy (collapsed stacks) into this directory")
    args = parser.parse_args()
    n = args.recipients
    counts = [args.workers] if args.workers else [1, 2]

    workdir = Path(tempfile.mkdtemp(prefix="sb-sink-"))
    sink: Sink | DeferringSink
    if args.deferring is not None:
        os.environ.setdefault("SENDBOARD_DEFER_UNIT_SECONDS", "0.05")
        sink = DeferringSink(max(0, min(100, args.deferring)))
        args.no_floor = True
        print(f"deferring sink: 451 to the first attempt of {sink.percent}% of the addresses; "
              f"backoff minute {os.environ['SENDBOARD_DEFER_UNIT_SECONDS']} s", flush=True)
    else:
        sink = Sink(workdir)
    print(f"smtp-sink on 127.0.0.1:{sink.port}; {n:,} recipients, batch size {args.batch_size}",
          flush=True)
    results: list[RunResult] = []
    sample = None
    failed = False
    try:
        for k in counts:
            print(f"pipeline with {k} worker{'s' if k > 1 else ''}:", flush=True)
            r = run_pipeline(n, k, args.batch_size, sink, want_sample=sample is None,
                             profile_dir=args.profile)
            sample = sample or r.sample
            results.append(r)
            ok = r.sent == n and r.at_sink == n
            if isinstance(sink, DeferringSink):
                twice = sink.duplicates()
                ok = ok and twice == 0 and len(sink.copies) >= n
                print(f"  workers={k}: {sink.deferred:,} first attempts refused for now; "
                      f"{len(sink.copies):,} addresses received, {twice} of them more than once",
                      flush=True)
                sink.stop()
                sink = DeferringSink(sink.percent)  # a fresh sink for the next run
            failed |= not ok
            rss = ", ".join(f"{kb / 1024:.1f} MiB" for kb in r.peak_rss_kb)
            print(f"  workers={k}: {r.sent:,} handed off ({r.at_sink:,} at the sink) in "
                  f"{r.seconds:.1f} s (prepare {r.prepare_seconds:.1f} s): "
                  f"{r.rate:,.0f} recipients/s; sending phase "
                  f"{r.sent / max(1e-9, r.seconds - r.prepare_seconds):,.0f}/s", flush=True)
            print(f"  workers={k}: peak RSS per worker: {rss}", flush=True)
            if not ok:
                print(f"  workers={k}: CHECK FAILED: expected {n:,} handed off", flush=True)
        floor = None
        if not args.no_floor and sample is not None:
            envelope_from, data = sample
            print(f"floor: bare smtplib, one connection, {n:,} pre-rendered messages of "
                  f"{len(data):,} bytes:", flush=True)
            floor = run_floor(n, sink, envelope_from, data)
            print(f"  floor: {floor:,.0f} messages/s", flush=True)
        one = next((r for r in results if r.workers == 1), None)
        if floor and one is not None:
            print(f"ratio: {one.rate / floor:.2f}")
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

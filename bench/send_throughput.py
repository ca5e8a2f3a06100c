"""Sending throughput, end to end, against an SMTP sink, beside the floor for the same sink.

    python bench/send_throughput.py [--recipients N] [--workers K] [--connections C] [--rounds R]
                                    [--relay-latency MS] [--deferring P] [--memory N1,N2,...]

For each worker count (default: 1, then 2) this builds a fresh SQLite database with N contacts in
one list, a mailing with a realistic HTML + text template and one SMTP provider (the sink) with C
connections per worker (Provider.connections, 4 by default), starts a Redis server, K real worker
processes (`python -m jobs.worker`) and sends the mailing. It times send_now until the mailing is
Sent, checks that all N recipients were handed off (in the database and at the sink), and reports
each worker's peak RSS (VmHWM).

The floor is what bare smtplib does against the same sink: K x C connections, one thread each,
pushing N pre-rendered messages (one real message of the mailing, its bytes reused). It varies
with the machine's load, so floors and pipeline runs alternate: `--rounds R` (3 by default)
pipeline runs per worker count, with a floor before the first and after each one, and each run
is compared with the mean of the two floors beside it. The medians of the R runs count. The last
line is `ratio: X.XX`, the median share of the floor for 1 worker.

The sink is Postfix's smtp-sink (Debian's postfix package; installed with apt-get when missing
and run as root). `--relay-latency MS` sends to bench/relay_sink.py instead: an asyncio sink in a
process of its own that answers the end of each message's DATA after MS milliseconds, as a relay
across a network does, over any number of connections at once.

Targets (printed beside the figures): on smtp-sink, 1 worker >= 60% of the floor; with
`--relay-latency 25` and 2 workers, >= 1,000 recipients/s and >= 80% of the floor.
`--check-targets` exits non-zero when one is missed.

`--memory 100000,1000000` sends to smtp-sink once per size (K workers, 2 by default, no floor) and
prints the workers' peak RSS per size: worker memory must stay flat as the audience grows.

`--deferring P` has the relay sink answer 451 4.7.1 to the first attempt of P% of the addresses;
the backoff's minute is shortened to SENDBOARD_DEFER_UNIT_SECONDS (0.05 s by default here), the
bench waits for the retries and checks that every address arrived exactly once in the end, none
of them deferred for good (no floor in that mode). It combines with --relay-latency.

Correctness checks (every recipient handed off once) exit non-zero when they fail.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.relay_sink import RelaySink  # noqa: E402

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


class AnySink(Protocol):
    port: int

    def received(self) -> int: ...

    def stop(self) -> None: ...


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


def _seed(n: int, sink_port: int, connections: int) -> int:
    """N contacts in one list, a draft mailing and the sink as the default provider with
    `connections` SMTP connections per worker; returns the mailing id (app context active)."""
    from sqlalchemy import text

    from app.extensions import db
    from app.models import ContactList, Provider, User
    from app.services import mailings

    db.create_all()
    owner = User(email="owner@shop.example.com", password_hash="x")
    lst = ContactList(name="Newsletter")
    relay = Provider(name="Bench sink", kind="smtp", host="127.0.0.1", port=sink_port,
                     security="none", rate_per_second=0.0, is_default=True,
                     connections=connections)
    db.session.add_all([owner, lst, relay])
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


def run_pipeline(n: int, workers: int, batch_size: int, sink: AnySink, connections: int,
                 want_sample: bool, profile_dir: Path | None) -> RunResult:
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
                mailing_id = _seed(n, sink.port, connections)
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


def run_floor(n: int, sink: AnySink, envelope_from: str, data: bytes, connections: int) -> float:
    """Messages per second for bare smtplib: `connections` connections, a thread each, sending
    n messages between them (the same bytes each time) as fast as the sink answers."""
    before = sink.received()
    shares = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]
    ready = threading.Barrier(connections + 1)
    errors: list[BaseException] = []

    def push(first: int, count: int) -> None:
        try:
            conn = smtplib.SMTP("127.0.0.1", sink.port, local_hostname="sendboard.local",
                                timeout=60)
            conn.ehlo()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
            for i in range(first, first + count):
                conn.sendmail(envelope_from, [f"subscriber{i}@example.org"], data)
            conn.quit()
        except BaseException as exc:
            errors.append(exc)

    threads, first = [], 0
    for count in shares:
        threads.append(threading.Thread(target=push, args=(first, count), daemon=True))
        first += count
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.monotonic()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    if errors:
        raise RuntimeError(f"floor: {errors[0]!r}")
    time.sleep(0.3)
    got = sink.received() - before
    if got != n:
        raise RuntimeError(f"floor: the sink counted {got} messages, expected {n}")
    return n / seconds


# ---------------------------------------------------------------- main


def _load() -> str:
    """The machine's load average over the last minute: figures vary with it."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _target(label: str, value: float, goal: float, fmt: str, missed: list[str]) -> str:
    ok = value >= goal
    if not ok:
        missed.append(label)
    return f"{label}: {fmt.format(value)} (target >= {fmt.format(goal)}: {'met' if ok else 'MISSED'})"


def _report_run(r: RunResult, n: int) -> bool:
    ok = r.sent == n and r.at_sink == n
    k = r.workers
    rss = ", ".join(f"{kb / 1024:.1f} MiB" for kb in r.peak_rss_kb)
    print(f"  workers={k}: {r.sent:,} handed off ({r.at_sink:,} at the sink) in "
          f"{r.seconds:.1f} s (prepare {r.prepare_seconds:.1f} s): "
          f"{r.rate:,.0f} recipients/s; sending phase "
          f"{r.sent / max(1e-9, r.seconds - r.prepare_seconds):,.0f}/s ({_load()})", flush=True)
    print(f"  workers={k}: peak RSS per worker: {rss}", flush=True)
    if not ok:
        print(f"  workers={k}: CHECK FAILED: expected {n:,} handed off", flush=True)
    return ok


def memory_mode(sizes: list[int], workers: int, batch_size: int, connections: int,
                profile: Path | None) -> bool:
    """One run per audience size on smtp-sink; worker memory must not grow with it."""
    workdir = Path(tempfile.mkdtemp(prefix="sb-sink-"))
    sink = Sink(workdir)
    print(f"smtp-sink on 127.0.0.1:{sink.port}; memory by audience size, {workers} worker(s), "
          f"{connections} connection(s) each, batch size {batch_size}", flush=True)
    ok = True
    peaks: list[tuple[int, int]] = []
    try:
        for n in sizes:
            print(f"pipeline with {n:,} recipients:", flush=True)
            r = run_pipeline(n, workers, batch_size, sink, connections, want_sample=False,
                             profile_dir=profile)
            ok &= _report_run(r, n)
            peaks.append((n, max(r.peak_rss_kb)))
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("peak RSS of the largest worker by size:", flush=True)
    for n, kb in peaks:
        print(f"  {n:>10,} recipients: {kb / 1024:.1f} MiB", flush=True)
    if len(peaks) > 1:
        growth = peaks[-1][1] / max(1, peaks[0][1]) - 1
        flat = abs(growth) <= 0.10
        print(f"memory: {growth:+.1%} from {peaks[0][0]:,} to {peaks[-1][0]:,} recipients "
              f"({'flat' if flat else 'NOT FLAT'}: target within 10%)", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: run with 1 and then 2)")
    parser.add_argument("--connections", type=int, default=4,
                        help="SMTP connections per worker (the provider's setting; default 4)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--relay-latency", type=float, default=None, metavar="MS",
                        help="send to an asyncio sink that answers each message after MS ms")
    parser.add_argument("--no-floor", action="store_true", help="skip the smtplib floors")
    parser.add_argument("--rounds", type=int, default=3,
                        help="pipeline runs per worker count, each followed by a floor; the "
                             "medians count (default 3)")
    parser.add_argument("--deferring", type=int, default=None, metavar="PERCENT",
                        help="the sink answers 451 4.7.1 to the first attempt of PERCENT%% of "
                             "the addresses; each must arrive exactly once in the end")
    parser.add_argument("--memory", default=None, metavar="N1,N2,...",
                        help="worker peak RSS per audience size (smtp-sink, no floor)")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit non-zero when a speed or memory target is missed")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record each worker with py-spy (collapsed stacks) into this directory")
    args = parser.parse_args()
    connections = max(1, args.connections)
    rounds = max(1, args.rounds)

    if args.memory:
        try:
            sizes = [int(x.replace("_", "")) for x in args.memory.split(",") if x.strip()]
        except ValueError:
            sys.exit("--memory takes audience sizes separated by commas, such as 100000,1000000")
        ok = memory_mode(sizes, args.workers or 2, args.batch_size, connections, args.profile)
        sys.exit(0 if ok else 1)

    n = args.recipients
    counts = [args.workers] if args.workers else [1, 2]
    latency = args.relay_latency
    workdir = Path(tempfile.mkdtemp(prefix="sb-sink-"))
    sink: AnySink
    deferring = args.deferring is not None
    if deferring:
        os.environ.setdefault("SENDBOARD_DEFER_UNIT_SECONDS", "0.05")
        relay = RelaySink(latency or 0.0, defer=max(0, min(100, args.deferring)), track=True)
        sink = relay
        args.no_floor = True
        print(f"relay sink: 451 4.7.1 to the first attempt of {relay.defer}% of the addresses"
              f"{f', {latency:g} ms a message' if latency else ''}; backoff minute "
              f"{os.environ['SENDBOARD_DEFER_UNIT_SECONDS']} s", flush=True)
    elif latency is not None:
        sink = RelaySink(latency)
        print(f"relay sink answering each message after {latency:g} ms", flush=True)
    else:
        sink = Sink(workdir)
    print(f"sink on 127.0.0.1:{sink.port}; {n:,} recipients, batch size {args.batch_size}, "
          f"{connections} SMTP connection(s) per worker", flush=True)
    failed = False
    missed: list[str] = []
    ratios: dict[int, float] = {}
    try:
        sample = None
        if not args.no_floor:
            # A small run first: it yields one real message for the floors and warms up.
            print("warm-up run (1 worker, 1,000 recipients) for a real message:", flush=True)
            warm = run_pipeline(min(n, 1000), 1, args.batch_size, sink, connections,
                                want_sample=True, profile_dir=None)
            failed |= not (warm.sent == warm.at_sink == min(n, 1000))
            sample = warm.sample
        for k in counts:
            floors: list[float] = []
            rates: list[float] = []
            shares: list[float] = []  # each run over the mean of the floors beside it
            if sample is not None:
                envelope_from, data = sample
                print(f"floor before: bare smtplib, {k * connections} connection(s) in threads, "
                      f"{n:,} pre-rendered messages of {len(data):,} bytes:", flush=True)
                floors.append(run_floor(n, sink, envelope_from, data, k * connections))
                print(f"  floor before: {floors[-1]:,.0f} messages/s ({_load()})", flush=True)
            for turn in range(rounds):
                print(f"pipeline with {k} worker{'s' if k > 1 else ''}"
                      f"{f' (round {turn + 1} of {rounds})' if rounds > 1 else ''}:", flush=True)
                if isinstance(sink, RelaySink):
                    sink.reset()
                r = run_pipeline(n, k, args.batch_size, sink, connections,
                                 want_sample=sample is None and not args.no_floor,
                                 profile_dir=args.profile if turn == 0 else None)
                rates.append(r.rate)
                ok = _report_run(r, n)
                if isinstance(sink, RelaySink):
                    st = sink.stat()
                    print(f"  workers={k}: the sink saw {st['connections']:,} connections, at "
                          f"most {st['peak_open']} open at once", flush=True)
                if isinstance(sink, RelaySink) and deferring:
                    exact = (st["distinct"] == n and st["duplicates"] == 0
                             and st["received"] == n)
                    print(f"  workers={k}: {st['deferred']:,} first attempts refused for now; "
                          f"{st['distinct']:,} of {n:,} addresses received, {st['duplicates']} "
                          f"of them more than once; {st['received']:,} messages accepted: "
                          f"{'each exactly once' if exact else 'CHECK FAILED'}", flush=True)
                    ok = ok and exact
                failed |= not ok
                if sample is not None:
                    envelope_from, data = sample
                    floors.append(run_floor(n, sink, envelope_from, data, k * connections))
                    print(f"  floor after: {floors[-1]:,.0f} messages/s ({_load()})", flush=True)
                    before, after = floors[-2], floors[-1]
                    mean = (before + after) / 2
                    shares.append(r.rate / mean)
                    print(f"  workers={k}: {r.rate:,.0f} recipients/s is "
                          f"{r.rate / before:.2f} of the floor before, "
                          f"{r.rate / after:.2f} of the floor after, "
                          f"{shares[-1]:.2f} of their mean ({mean:,.0f}/s)", flush=True)
            rate = statistics.median(rates)
            if shares:
                ratios[k] = statistics.median(shares)
                if rounds > 1:
                    print(f"  workers={k}: {rounds} rounds: "
                          f"{', '.join(f'{x:,.0f}/s' for x in rates)}; shares of the floors "
                          f"beside them {', '.join(f'{x:.2f}' for x in shares)}; median "
                          f"{rate:,.0f}/s and {ratios[k]:.2f}", flush=True)
            if latency:
                ceiling = k * connections * 1000.0 / latency
                print(f"  workers={k}: at most {ceiling:,.0f}/s through {k * connections} "
                      f"connections answering after {latency:g} ms", flush=True)
            if latency and abs(latency - 25) < 1e-9 and k == 2 and not deferring:
                print("  " + _target("recipients/s, 2 workers, 25 ms", rate, 1000,
                                     "{:,.0f}", missed), flush=True)
                if k in ratios:
                    print("  " + _target("share of the floor, 2 workers, 25 ms", ratios[k], 0.80,
                                         "{:.2f}", missed), flush=True)
            if latency is None and not deferring and k == 1 and k in ratios:
                print("  " + _target("share of the floor, 1 worker, smtp-sink", ratios[k], 0.60,
                                     "{:.2f}", missed), flush=True)
        if 1 in ratios:
            print(f"ratio: {ratios[1]:.2f}")
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        sys.exit(1)
    if missed and args.check_targets:
        sys.exit(2)


if __name__ == "__main__":
    main()

"""`sendboard run` end to end: start it as a newcomer would, sign in, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener, urlopen

import pytest
from runtime_helpers import REPO, free_port

from app.webhooks.auth import generic_signature

STARTUP_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 15.0


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) for every process, read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    table = _proc_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[str]:
    table = _proc_table()
    left = []
    for pid, started in processes.items():
        if pid in table and table[pid][1] == started:
            try:
                state = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if state != "Z":
                left.append(f"{pid}: {cmdline}")
    return left


def _cmdlines(pids: dict[int, str]) -> str:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return "\n".join(out)


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None:
            raise AssertionError(f"sendboard run exited with {proc.returncode}:\n{text}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not printed within {STARTUP_TIMEOUT} s:\n{text}")


def test_sendboard_run_serves_signs_in_and_stops_cleanly(tmp_path: Path) -> None:
    web_port, smtp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "SMTP_HOST", "DATABASE_URL", "SENDBOARD_BASE_URL",
                        "SENDBOARD_ENV", "SECRET_KEY", "GENERIC_WEBHOOK_SECRET"}}
    env.update(SENDBOARD_INSTANCE=str(tmp_path / "instance"),
               SENDBOARD_CAPTURE_PORT=str(smtp_port), PYTHONUNBUFFERED="1")
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        # A session of its own so the test can signal the whole group, as Ctrl-C in a terminal does.
        proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "run",
             "--port", str(web_port), "--workers", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    children: dict[int, str] = {}
    try:
        url = _wait_for(log, r"Sendboard is running at (http://\S+)", proc).group(1)
        assert url == f"http://127.0.0.1:{web_port}"
        login = _wait_for(log, r"Sign in as (\S+) with the password (\S+)", proc)
        email, password = login.group(1), login.group(2)
        assert email == "demo@sendboard.local"

        opener = build_opener(HTTPCookieProcessor(CookieJar()))
        form = opener.open(f"{url}/login", timeout=10).read().decode()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form)
        assert token, form
        body = urlencode({"csrf_token": token.group(1), "email": email, "password": password})
        home = opener.open(f"{url}/login", data=body.encode(), timeout=10)
        assert home.status == 200 and home.url.endswith("/home")

        # The capture server that `run` started receives mail and the page lists it.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail("shop@example.com", ["ana@example.org"],
                          b"Subject: Smoke test\r\nMessage-ID: <smoke@test>\r\n\r\nhi\r\n")
        captured = opener.open(f"{url}/captured", timeout=10).read().decode()
        assert "Smoke test" in captured

        # Signed events are accepted out of the box (what `sendboard simulate` posts), with the
        # secret `run` keeps under instance/; an unsigned post is refused.
        secret = (tmp_path / "instance" / "generic-webhook-secret").read_text().strip()
        assert len(secret) >= 32
        events = b'{"events": []}'
        stamp = str(int(time.time()))
        signed = Request(f"{url}/webhooks/generic", data=events, headers={
            "Content-Type": "application/json", "X-Sendboard-Timestamp": stamp,
            "X-Sendboard-Signature": generic_signature(secret, stamp, events)})
        assert json.loads(urlopen(signed, timeout=10).read()) == {
            "received": 0, "applied": 0, "duplicates": 0, "unmatched": 0}
        with pytest.raises(HTTPError) as refused:
            urlopen(Request(f"{url}/webhooks/generic", data=events,
                            headers={"Content-Type": "application/json"}), timeout=10)
        assert refused.value.code == 401

        children = _descendants(proc.pid)
        commands = _cmdlines(children)
        assert "jobs.worker" in commands, commands
        assert "app.runtime.capture" in commands, commands
        assert "redis-server" in commands, commands
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError(f"did not stop in {SHUTDOWN_TIMEOUT} s:\n{log.read_text()}") from exc
    elapsed = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output
    assert "Sendboard stopped." in output
    assert elapsed < SHUTDOWN_TIMEOUT
    # Give the kernel a moment to reap, then nothing `run` started may remain.
    deadline = time.monotonic() + 3
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(children) == [], output
    assert "Traceback" not in output, output

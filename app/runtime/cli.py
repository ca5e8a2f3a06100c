"""`sendboard run`, `sendboard worker` and `sendboard seed-demo`.

`sendboard run` is the one command a newcomer needs: it upgrades the database, starts an embedded
Redis and the capture SMTP server (unless REDIS_URL / SMTP_HOST point elsewhere), starts the RQ
workers, seeds demo data on the first run and serves the web app until Ctrl-C, then stops everything
it started, in the reverse order.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app

from app.config import local_webhook_secret

# How long a worker may take to finish its current batch after being asked to stop.
WORKER_STOP_TIMEOUT = 10.0
# A worker that dies is started again, but not in a tight loop if it dies at once every time.
WORKER_RESTART_DELAY = 2.0


def register(app: Flask) -> None:
    """Add the runtime commands to the `sendboard` CLI."""

    @app.cli.command("run")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
    @click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 64),
                  help="How many RQ worker processes to start.")
    def run_command(host: str, port: int, workers: int) -> None:
        """Run everything on this machine: database, Redis, capture SMTP, workers and web app."""
        LocalStack(current_app._get_current_object(), host=host, port=port,  # type: ignore[attr-defined]
                   workers=workers).run()

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
    @click.option("--no-scheduler", is_flag=True, help="Do not run RQ's scheduler in this worker.")
    def worker_command(burst: bool, no_scheduler: bool) -> None:
        """Run one worker in this process (any machine with the same DATABASE_URL and REDIS_URL)."""
        from jobs.worker import run_worker

        if not os.environ.get("REDIS_URL"):
            raise click.ClickException(
                "REDIS_URL is not set: point it at the Redis that `sendboard run` or your "
                "deployment uses (for example redis://redis-host:6379/0)"
            )
        run_worker(burst=burst, with_scheduler=not no_scheduler)

    @app.cli.command("seed-demo")
    def seed_demo_command() -> None:
        """Create the demo admin, email types, contact list and draft mailing (if missing)."""
        from app.runtime.demo import seed_demo

        upgrade_database()
        login = seed_demo()
        click.echo(_login_line(login.email, login.password))


def upgrade_database() -> None:
    """Bring the database schema to the newest migration (creates it on a first run)."""
    import flask_migrate

    Path(current_app.config["INSTANCE_DIR"]).mkdir(parents=True, exist_ok=True)
    flask_migrate.upgrade()


def _login_line(email: str, password: str | None) -> str:
    if password is None:
        return f"Sign in as {email} (password set earlier; `sendboard create-user` adds users)"
    return f"Sign in as {email} with the password {password}"


def _die_with_parent() -> None:
    """In a child: get SIGTERM if `sendboard run` dies, so nothing is left running after a crash."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalStack:
    """The processes of a local install, started in order and stopped in reverse order."""

    def __init__(self, app: Flask, *, host: str, port: int, workers: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.worker_count = workers
        self.instance = Path(app.config["INSTANCE_DIR"])
        self.stop_requested = threading.Event()
        self.serving = False
        self.redis: Any = None
        self.capture: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.worker_started: list[float] = []
        self.web: Any = None
        self.web_thread: threading.Thread | None = None
        self.env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT,
                                                                           signal.SIGTERM)}
        try:
            self._start()
            self.serving = True
            self._announce()
            while not self.stop_requested.wait(1.0):
                self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            self.serving = False
            # A second Ctrl-C during shutdown must not leave children behind half-stopped.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            click.echo("Sendboard stopped.")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested.set()
        if not self.serving:
            # Still starting up: abandon the start-up; `run` stops whatever already started.
            raise KeyboardInterrupt

    def _start(self) -> None:
        self.instance.mkdir(parents=True, exist_ok=True)
        click.echo(f"Instance directory: {self.instance}")
        with self.app.app_context():
            upgrade_database()
        self._bind_web()
        self.env = dict(os.environ)
        self.env["SENDBOARD_INSTANCE"] = str(self.instance)
        self.env.setdefault("SENDBOARD_BASE_URL", self.url)
        self.app.config["BASE_URL"] = self.env["SENDBOARD_BASE_URL"].rstrip("/")
        self._start_redis()
        self._start_capture()
        if not self.env.get("GENERIC_WEBHOOK_SECRET"):
            # A local install accepts signed events (`sendboard simulate`) out of the box.
            secret = local_webhook_secret(self.instance, create=True)
            self.env["GENERIC_WEBHOOK_SECRET"] = secret
            os.environ["GENERIC_WEBHOOK_SECRET"] = secret
            self.app.config["GENERIC_WEBHOOK_SECRET"] = secret
        with self.app.app_context():
            self._seed_if_first_run()
        for _ in range(self.worker_count):
            self.workers.append(self._spawn_worker())
            self.worker_started.append(time.monotonic())
        self.web_thread = threading.Thread(target=self.web.serve_forever, name="web",
                                           daemon=True)
        self.web_thread.start()

    def _stop(self) -> None:
        self._step("web server", self._stop_web)
        self._step("workers", self._stop_workers)
        self._step("capture SMTP server", self._stop_capture)
        self._step("Redis", self._stop_redis)

    @staticmethod
    def _step(name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # one failing step must not keep the others running
            click.echo(f"Stopping the {name} failed: {exc}", err=True)

    # -- web ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in {"0.0.0.0", ""} else self.host
        return f"http://{shown}:{self.port}"

    def _bind_web(self) -> None:
        from werkzeug.serving import make_server

        try:
            # Binding before anything else starts makes a busy port fail fast and cleanly.
            self.web = make_server(self.host, self.port, self.app, threaded=True)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve on {self.host}:{self.port} ({exc.strerror or exc}); "
                "is Sendboard already running? Choose another port with --port"
            ) from exc

    def _stop_web(self) -> None:
        if self.web is None:
            return
        if self.web_thread is not None and self.web_thread.is_alive():
            self.web.shutdown()
            self.web_thread.join(timeout=5)
        self.web.server_close()
        self.web = None

    # -- Redis ----------------------------------------------------------------------------

    def _start_redis(self) -> None:
        url = self.env.get("REDIS_URL", "")
        if url:
            click.echo(f"Redis: {url} (from REDIS_URL)")
        else:
            from app.runtime import redis_server

            # EmbeddedRedis runs in a session of its own (a Ctrl-C must not stop it under the
            # workers still finishing a batch); `_stop` stops it last.
            self.redis = redis_server.EmbeddedRedis(self.instance / "redis").start()
            url = self.redis.url
            click.echo(f"Redis: embedded server at {url}")
        # Children inherit it, and this process's own Redis connections find it the same way.
        self.env["REDIS_URL"] = url
        os.environ["REDIS_URL"] = url
        self.app.config["REDIS_URL"] = url

    def _stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    # -- capture SMTP ---------------------------------------------------------------------

    def _start_capture(self) -> None:
        if self.env.get("SMTP_HOST"):
            click.echo(f"SMTP: relay {self.env['SMTP_HOST']}:{self.app.config['SMTP_PORT']}")
            return
        port = int(self.app.config["CAPTURE_SMTP_PORT"])
        if _port_open("127.0.0.1", port):
            raise click.ClickException(
                f"port {port} is in use, so the capture SMTP server cannot start; set "
                "SENDBOARD_CAPTURE_PORT to a free port (or SMTP_HOST to use a real relay)"
            )
        self.env["SENDBOARD_CAPTURE_PORT"] = str(port)
        args = [
            sys.executable, "-m", "app.runtime.capture", "--dir", str(self.instance / "capture"),
            "--bounce-dir", str(self.instance / "bounces"), "--port", str(port),
            "--bounce-domain", str(self.app.config["BOUNCE_DOMAIN"]),
        ]
        self.capture = self._spawn(args)
        deadline = time.monotonic() + 15
        while not _port_open("127.0.0.1", port):
            if self.capture.poll() is not None:
                raise click.ClickException("the capture SMTP server exited at start (see above)")
            if time.monotonic() > deadline:
                raise click.ClickException("the capture SMTP server did not start within 15 s")
            time.sleep(0.05)
        click.echo(f"SMTP: capture server on 127.0.0.1:{port}, mail kept in "
                   f"{self.instance / 'capture'}")

    def _stop_capture(self) -> None:
        if self.capture is not None:
            self._terminate(self.capture, timeout=5)
            self.capture = None

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        # A session of their own: Ctrl-C reaches only this process, which then stops the
        # children in order (workers before the services they depend on).
        return subprocess.Popen(
            args, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn([sys.executable, "-m", "jobs.worker"])

    def _supervise(self) -> None:
        """Start again any worker that died, so a crash does not stop sending for good."""
        for i, proc in enumerate(self.workers):
            if proc is None or proc.poll() is None:
                continue
            if time.monotonic() - self.worker_started[i] < WORKER_RESTART_DELAY:
                continue
            click.echo(f"Worker {proc.pid} exited with code {proc.returncode}; starting another.",
                       err=True)
            self.workers[i] = self._spawn_worker()
            self.worker_started[i] = time.monotonic()
        if self.capture is not None and self.capture.poll() is not None:
            click.echo("The capture SMTP server exited; starting it again.", err=True)
            self.capture = None
            try:
                self._start_capture()
            except click.ClickException as exc:
                click.echo(f"Could not restart the capture SMTP server: {exc.message}", err=True)

    def _stop_workers(self) -> None:
        running = [p for p in self.workers if p is not None and p.poll() is None]
        for proc in running:
            # RQ's warm shutdown: the current job finishes, then the worker exits.
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT
        for proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                click.echo(f"Worker {proc.pid} did not stop in time; killing it.", err=True)
            self._kill_group(proc)
        self.workers = []

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        """Kill whatever is left in the child's session (an RQ work-horse, for instance)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait()

    def _terminate(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(proc)

    # -- demo data and greeting -----------------------------------------------------------

    def _seed_if_first_run(self) -> None:
        from app.runtime.demo import needs_demo, seed_demo

        if needs_demo():
            seed_demo()
            click.echo("Demo data created: list 'Demo customers' and a draft mailing.")

    def _announce(self) -> None:
        from app.runtime.demo import stored_login

        with self.app.app_context():
            login = stored_login()
        lines = [
            "",
            f"Sendboard is running at {self.url}",
            _login_line(login.email, login.password) if login else
            "Sign in with your account (`sendboard create-user --admin` adds one).",
            f"Workers: {self.worker_count}. Press Ctrl-C to stop.",
            "",
        ]
        click.echo("\n".join(lines))

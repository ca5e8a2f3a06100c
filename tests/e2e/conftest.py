"""Browser tests: the real app on 127.0.0.1, a real RQ worker process, Redis and an SMTP server,
driven through headless Debian Chromium with Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SENDBOARD_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
def sign_in() -> Callable[..., None]:
    """`sign_in(page, deployment.url)`: the browser signs in as the deployment's admin."""
    from playwright.sync_api import expect

    def sign_in(page, base: str) -> None:  # type: ignore[no-untyped-def]
        page.goto(f"{base}/login")
        page.get_by_label("Email").fill("admin@example.org")
        page.get_by_label("Password").fill("browser-password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("link", name="Mailings")).to_be_visible()

    return sign_in


@pytest.fixture(scope="session")
def base_url() -> None:
    """Replaces pytest-base-url's fixture (a session fixture on a class, which pytest 9 warns
    about); the tests build their URLs from the deployment."""
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found (set SENDBOARD_CHROMIUM or apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": path, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1360, "height": 900}}


@dataclass
class Deployment:
    url: str
    app: object
    smtp: object
    worker: subprocess.Popen[bytes]
    tmp: Path

    def screenshot(self, page, name: str, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


@pytest.fixture
def deployment(tmp_path: Path, redis_server: str) -> Iterator[Deployment]:
    """The web app served by werkzeug in a thread, one `python -m jobs.worker` process, the
    embedded Redis and an SMTP server whose per-message delay the test can change."""
    if chromium_path() is None:
        pytest.skip("Chromium not found (set SENDBOARD_CHROMIUM or apt-get install chromium)")
    from werkzeug.serving import make_server

    from app import create_app
    from app.config import Config
    from app.extensions import db
    from app.services.users import create_user
    from tests.smtp_server import SmtpServer

    smtp = SmtpServer().start()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sendboard.db'}",
        "REDIS_URL": redis_server,
        "SENDBOARD_INSTANCE": str(tmp_path),
        "SENDBOARD_CAPTURE_PORT": str(smtp.port),
        "SMTP_HOST": "",
        "SECRET_KEY": "browser-tests",
        "BATCH_SIZE": "20",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    app = create_app(Config())
    with app.app_context():
        db.create_all()
        create_user(email="admin@example.org", password="browser-password", name="Ada Admin",
                    role="admin")
        db.session.commit()
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.5)
    try:
        yield Deployment(f"http://127.0.0.1:{server.server_port}", app, smtp, worker, tmp_path)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        server.shutdown()
        thread.join(timeout=5)
        smtp.stop()
        with app.app_context():
            db.engine.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

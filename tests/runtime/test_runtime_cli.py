from __future__ import annotations

from pathlib import Path

import pytest

from app import config as app_config
from app import create_app
from app.extensions import db


def test_seed_demo_command_creates_the_schema_and_prints_the_login(tmp_path: Path) -> None:
    app = create_app(app_config.TestConfig(str(tmp_path)))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "Sign in as demo@sendboard.local with the password" in result.output
    again = runner.invoke(args=["seed-demo"])
    assert again.exit_code == 0, again.output
    login = result.output.strip().splitlines()[-1]
    assert again.output.strip().splitlines()[-1] == login  # same login, nothing duplicated
    with app.app_context():
        db.engine.dispose()


def test_worker_command_explains_a_missing_redis_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app(app_config.TestConfig(str(tmp_path)))
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code != 0
    assert "REDIS_URL is not set" in result.output

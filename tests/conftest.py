"""Shared fixtures: an app on a throwaway database, a logged-in client, a real Redis server and
a real SMTP server (tests.factories, with the builders of test data)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.config import TestConfig
from app.extensions import db
from tests.factories import smtp  # noqa: F401 - the SMTP server fixture, for every test module


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(TestConfig(str(tmp_path)))
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            db.drop_all()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class AuthActions:
    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    def create(self, email: str = "staff@example.org", password: str = "correct horse",
               role: str = "editor") -> None:
        from app.services.users import create_user, find_user

        if find_user(email) is None:
            create_user(email=email, password=password, role=role)
            db.session.commit()

    def login(self, email: str = "staff@example.org", password: str = "correct horse",
              role: str = "editor") -> None:
        self.create(email, password, role)
        response = self.client.post("/login", data={"email": email, "password": password})
        assert response.status_code == 302, response.data

    def logout(self) -> None:
        self.client.post("/logout")


@pytest.fixture
def auth(app: Flask, client: FlaskClient) -> AuthActions:
    return AuthActions(app, client)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole run; REDIS_URL points at it."""
    from app.runtime.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    previous = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = server.url
    try:
        yield server.url
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = previous


@pytest.fixture
def redis_conn(redis_server: str):
    from redis import Redis

    conn = Redis.from_url(redis_server)
    conn.flushall()
    yield conn
    conn.flushall()

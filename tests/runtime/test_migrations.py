"""The migrations build exactly the schema app/models.py describes, on SQLite and PostgreSQL.

When this fails after a model change: `sendboard db migrate -m "what changed"`, review the new file
in app/migrations/versions, and commit it with the model change.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from app import config as app_config
from app import create_app
from app.extensions import db


def _upgrade_and_compare(database_url: str, instance: Path) -> list[object]:
    import flask_migrate

    config = app_config.TestConfig(str(instance))
    config.SQLALCHEMY_DATABASE_URI = database_url
    config.SQLALCHEMY_ENGINE_OPTIONS = {}
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        db.engine.dispose()
    return list(diff)


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    assert _upgrade_and_compare(f"sqlite:///{tmp_path / 'migrated.db'}", tmp_path) == []


@pytest.mark.postgres
def test_migrations_match_the_models_on_postgresql(tmp_path: Path) -> None:
    url = os.environ.get("SENDBOARD_TEST_PG_URL")
    if not url:
        pytest.skip("SENDBOARD_TEST_PG_URL is not set (scripts/test starts a PostgreSQL cluster)")
    name = f"sendboard_migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        assert _upgrade_and_compare(url.rsplit("/", 1)[0] + f"/{name}", tmp_path) == []
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

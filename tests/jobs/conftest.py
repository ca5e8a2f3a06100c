"""The real deployment (database, Redis, capture SMTP server, worker processes) for the tests
of this folder that ask for it: tests.deployment's fixtures, parametrised over SQLite and, when
SENDBOARD_TEST_PG_URL is set, PostgreSQL."""

from tests.deployment import database_url, deployment  # noqa: F401 - fixtures for the tests here

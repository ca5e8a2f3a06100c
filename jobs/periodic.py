"""Periodic jobs, declared in one list with deterministic ids (a restart never schedules twice)."""

from __future__ import annotations

from redis import Redis


def install(connection: Redis) -> None:
    """Make sure each periodic job is scheduled exactly once."""
    # Filled in by the sending engine (scheduler tick, reconciler) and the response jobs.
    return None

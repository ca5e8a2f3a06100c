"""Running job functions inside a Flask app context."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, has_app_context

F = TypeVar("F", bound=Callable[..., Any])
_app: Any = None


def in_app_context(func: F) -> F:
    """Run the job in the worker's app (built once per process) unless one is active already."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _app
        if has_app_context():  # tests and inline runs: the caller owns the session
            return func(*args, **kwargs)
        if _app is None:
            from app import create_app

            _app = create_app()
        with _app.app_context():
            try:
                return func(*args, **kwargs)
            finally:
                from app.extensions import db

                db.session.remove()

    return wrapper  # type: ignore[return-value]


__all__ = ["current_app", "in_app_context"]

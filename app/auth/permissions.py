"""`@requires("mailings.send")`: the signed-in user's role must allow the action (app.domain.roles)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, request
from flask_login import current_user, login_required

from app.domain import roles

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def requires(action: str, *, writes_only: bool = False
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Refuse (403, saying why) users whose role may not do `action`.

    `writes_only`: a page that shows data on GET and changes it on POST is open to readers on
    GET and checked only for the other methods.
    """
    if action not in roles.ALL_ACTIONS:
        raise ValueError(f"unknown action {action!r}")

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        @login_required
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if writes_only and request.method in READ_METHODS:
                return view(*args, **kwargs)
            if not roles.can(current_user.role, action):
                abort(403, description=roles.refusal(current_user.role, action))
            return view(*args, **kwargs)

        wrapper.required_action = action  # type: ignore[attr-defined]
        return wrapper

    return decorate

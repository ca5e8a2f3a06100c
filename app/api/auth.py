"""Bearer tokens, scopes, the per-token rate and the audit trail of API calls.

A token is shown once when created; only its SHA-256 is stored (app/services/api_tokens.py).
The rate is a fixed one-minute window per token in Redis (a per-process counter when no Redis
is configured; a Redis that cannot be reached lets calls through and logs it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from flask import g, request
from sqlalchemy import select

from app.api.problems import ApiProblem
from app.extensions import db
from app.models import ApiToken, AuditEntry, utcnow

log = logging.getLogger(__name__)

# Every scope a token may hold, with what it allows (the token form and the docs list these).
SCOPES: dict[str, str] = {
    "contacts:read": "Read contacts, lists and segments",
    "contacts:write": "Create, change, unsubscribe, delete and erase contacts; list members",
    "transactions:write": "Record transactions (purchases)",
    "mailings:read": "Read mailings and their figures",
    "mailings:write": "Create and edit mailings",
    "mailings:send": "Send, schedule and cancel mailings",
    "events:read": "Read response events",
    "tx:send": "Send transactional messages",
}
# last_used_at is written at most this often per token, so reads do not all write.
LAST_USED_PRECISION = timedelta(seconds=30)
WINDOW_SECONDS = 60


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, slug="unauthorized",
                      headers={"WWW-Authenticate": 'Bearer realm="sendboard"'})


def authenticate() -> ApiToken:
    """The token of this request's ``Authorization: Bearer`` header; 401 otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.strip().partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        raise _unauthorized("Send the API token as 'Authorization: Bearer <token>'.")
    if len(raw) > 200:
        raise _unauthorized("The token is unknown or revoked.")
    token = db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_token(raw))).scalar_one_or_none()
    if token is None or token.revoked_at is not None:
        raise _unauthorized("The token is unknown or revoked.")
    return token


def current_token() -> ApiToken:
    token = g.get("api_token")
    if token is None:  # pragma: no cover - only reachable by a route outside `endpoint`
        raise _unauthorized("Send the API token as 'Authorization: Bearer <token>'.")
    return token  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Rate
# --------------------------------------------------------------------------------------------

_local_lock = threading.Lock()
_local_counts: dict[str, int] = {}


def _count_locally(key: str) -> int:
    with _local_lock:
        if len(_local_counts) > 10_000:
            _local_counts.clear()
        _local_counts[key] = _local_counts.get(key, 0) + 1
        return _local_counts[key]


def _count(key: str) -> int | None:
    """Calls counted under `key` so far, this one included; None when Redis failed."""
    from app.redis_conn import get_redis

    try:
        conn = get_redis()
    except RuntimeError:  # no REDIS_URL: a single process, counted in memory
        return _count_locally(key)
    try:
        pipe = conn.pipeline()
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS * 2)
        count, _ = pipe.execute()
        return int(count)
    except Exception:  # noqa: BLE001 - a Redis outage must not stop the API
        log.warning("API rate limit not applied: Redis could not be reached", exc_info=True)
        return None


def check_rate(token: ApiToken, now: float | None = None) -> None:
    """429 with Retry-After once the token made more than rate_per_minute calls this minute."""
    limit = token.rate_per_minute or 0
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    count = _count(f"sendboard:api:rate:{token.token_hash[:32]}:{window}")
    if count is not None and count > limit:
        retry = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        raise ApiProblem(429, f"This token may make {limit} calls a minute; retry in {retry} s.",
                         slug="rate-limited", title="Too many requests",
                         headers={"Retry-After": str(retry)})


# --------------------------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------------------------


def check_scope(token: ApiToken, scope: str | None) -> None:
    if scope is None:
        return
    if scope not in (token.scopes or []):
        raise ApiProblem(403, f"This token lacks the scope {scope!r}.", slug="missing-scope",
                         title="Missing scope", scope=scope)


def scoped(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The whole check for a view outside `endpoint`: token, rate, then `scope` (403 without it).

    Views declared with ``endpoint(..., scope=...)`` get this already."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = authenticate()
            check_rate(token)
            check_scope(token, scope)
            g.api_token = token
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # type: ignore[attr-defined]
        return wrapper

    return decorate


def touch(token: ApiToken) -> None:
    """Set last_used_at (at most every LAST_USED_PRECISION)."""
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        token.last_used_at = now


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------


def actor_name(token: ApiToken) -> str:
    return f"API token {token.name}"


def audit(action: str, target: Any = None, detail: str = "", *, kind: str = "") -> AuditEntry:
    """Record a change made through the API, naming the token (not committed: the wrapper does)."""
    from app.services import audit as audit_service

    token = current_token()
    return audit_service.record(action, target, detail, kind=kind, email=actor_name(token))

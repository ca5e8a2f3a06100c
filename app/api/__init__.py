"""The REST API at /api/v1: bearer tokens, scopes, JSON in and out, RFC 9457 problem details.

How a request is handled (see docs/ARCHITECTURE.md, "API"):

1. ``Authorization: Bearer <token>``: the token's SHA-256 names an ApiToken; unknown or revoked
   is 401. A session cookie is never read here: staff signed in to the pages are nobody to the API.
2. The token's rate (``rate_per_minute``, a fixed one-minute window in Redis) is checked: 429 with
   ``Retry-After`` above it.
3. The route's scope (``contacts:write``, ...) must be among the token's scopes, or 403.
4. The query string and the JSON body are validated by the route's pydantic models: 422 with
   ``errors: [{"field": "email", "detail": "..."}]`` naming each field, 400 for a body that is
   not JSON, 415 for one that is not ``application/json``, 413 above API_MAX_BYTES.
5. The view runs, the token's ``last_used_at`` is set, and the request's work is committed once.

Every error under /api/v1, including 404, 405 and 500, is ``application/problem+json``.

Adding an endpoint: put a module in app/api/endpoints/ (every module there is imported when the
blueprint is registered) and declare each route with ``endpoint``::

    from pydantic import BaseModel

    from app.api.auth import audit
    from app.api.registry import endpoint

    class ThingIn(BaseModel):
        name: str

    class ThingOut(BaseModel):
        id: int
        name: str

    @endpoint("POST", "/things", scope="things:write", body=ThingIn, response=ThingOut,
              status=201, tag="Things", summary="Create a thing")
    def create_thing(body: ThingIn) -> ThingOut:
        thing = things.create(body.name)        # a service: no commit inside
        audit("thing.create", thing, f"named {body.name!r}")
        return ThingOut(id=thing.id, name=thing.name)

- Path parameters (``/things/<int:thing_id>``) arrive as keyword arguments, the body as ``body``
  and the query model (``query=SomeQuery``) as ``query``. List endpoints take
  ``app.api.pagination.PageQuery`` (or a subclass) and return ``paginate(...)``'s result.
- Return a pydantic model (serialised with the response model), a dict or list, or
  ``(value, status)``. Raise ``app.api.problems.ApiProblem`` (or ``not_found(...)``,
  ``invalid(field, detail)``) for errors; never commit in the view: the wrapper commits.
- Every call that changes something calls ``audit(...)``, which names the token.
- Scopes are listed in ``app.api.auth.SCOPES``; add a new one there (the token form offers it).
- The route appears in /api/v1/openapi.json and on the staff docs page /api/docs by itself.
"""

from __future__ import annotations

from flask import Blueprint

from app.extensions import csrf

# Bulk calls carry up to 10,000 items; anything larger is refused before it is read.
API_MAX_BYTES = 32 * 1024 * 1024
API_PREFIX = "/api/v1"

bp = Blueprint("api", __name__, url_prefix=API_PREFIX)
csrf.exempt(bp)  # bearer tokens, never cookies: there is no session to forge a request with


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")

"""RFC 9457 problem details: every error under /api/v1 is ``application/problem+json``.

``{"type": "about:blank", "title": "Not Found", "status": 404, "detail": "...",
"instance": "/api/v1/contacts/9"}``; validation errors add ``errors``, one entry per field:
``{"field": "items.3.email", "detail": "..."}``. Problems specific to Sendboard carry a ``type``
pointing at their explanation on the API docs page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Response, request
from pydantic import TypeAdapter, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_MIMETYPE = "application/problem+json"
DOCS_PATH = "/api/docs"

# Sendboard's own problem types: slug -> what it means (listed on the docs page).
PROBLEM_TYPES: dict[str, str] = {
    "validation": "The body or query string failed validation; `errors` names each field.",
    "invalid-json": "The body is not JSON.",
    "unauthorized": "No bearer token, or one that is unknown or revoked.",
    "missing-scope": "The token is valid but lacks the scope this call needs.",
    "rate-limited": "Too many calls this minute for the token; retry after `Retry-After` seconds.",
    "suppressed": "The address was erased and cannot be added again.",
    "conflict": "The call conflicts with the current state (a name taken, a segment's members).",
}


def problem_type(slug: str) -> str:
    return f"{DOCS_PATH}#problem-{slug}"


class ApiProblem(Exception):
    """Raise from a view to answer with a problem; the wrapper rolls the request's work back."""

    def __init__(self, status: int, detail: str = "", *, slug: str = "", title: str = "",
                 errors: Iterable[Mapping[str, Any]] | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        return problem(self.status, self.detail, slug=self.slug, title=self.title,
                       errors=self.errors, headers=self.headers, **self.extra)


def problem(status: int, detail: str = "", *, slug: str = "", title: str = "",
            errors: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None,
            **extra: Any) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": problem_type(slug) if slug else "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    try:
        body["instance"] = request.path
    except RuntimeError:  # outside a request
        pass
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    response = Response(json.dumps(body, ensure_ascii=False), status=status,
                        mimetype=PROBLEM_MIMETYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def from_http_exception(error: HTTPException) -> Response:
    """werkzeug's 404, 405, 413, 500 ... as a problem (an Allow header kept for a 405)."""
    status = error.code or 500
    detail = error.description or ""
    if status == 404:
        detail = "There is nothing at this address."
    elif status == 405:
        detail = f"{request.method} is not allowed here."
    elif status == 413:
        detail = "The body is too large."
    elif status >= 500:
        detail = "The request failed and nothing was saved."
    headers = {}
    allow = error.get_headers() if status == 405 else []
    for key, value in allow:
        if key.lower() == "allow":
            headers["Allow"] = value
    return problem(status, detail, headers=headers)


def not_found(what: str) -> ApiProblem:
    return ApiProblem(404, f"No {what}.")


def invalid(field: str, detail: str) -> ApiProblem:
    """A 422 naming one field."""
    return ApiProblem(422, "The request is not valid.", slug="validation",
                      title="Validation failed", errors=[{"field": field, "detail": detail}])


def validation_errors(errors: Iterable[Mapping[str, Any]], *, prefix: str = "") -> list[dict[str, Any]]:
    """pydantic's errors as ``{"field": "items.0.email", "detail": "..."}``."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        field = ".".join([prefix, *loc] if prefix else loc) or "item"
        message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
        out.append({"field": field, "detail": message})
    return out


T = TypeVar("T")


def validate_items(one: TypeAdapter[T], every: TypeAdapter[list[T]], raws: list[Any],
                   refused: Callable[[int, Any, list[dict[str, Any]]], dict[str, Any]],
                   ) -> tuple[list[T], list[int], list[dict[str, Any] | None]]:
    """A bulk call's items: the valid ones, their positions in the call, and a result per
    position, already filled for each refused item with `refused(position, raw item, errors)`.

    Every item valid (the usual call): the list in one pass. Otherwise item by item, so each bad
    item is refused alone with its own errors and the rest go on.
    """
    results: list[dict[str, Any] | None] = [None] * len(raws)
    try:
        valid = every.validate_python(raws)
        return valid, list(range(len(valid))), results
    except ValidationError:
        pass
    valid, positions = [], []
    for i, raw in enumerate(raws):
        try:
            item = one.validate_python(raw)
        except ValidationError as exc:
            results[i] = refused(i, raw, validation_errors(
                exc.errors(include_url=False, include_input=False)))
            continue
        valid.append(item)
        positions.append(i)
    return valid, positions, results

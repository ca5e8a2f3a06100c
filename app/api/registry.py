"""`endpoint(...)`: declare an API route with its scope and models; the OpenAPI 3.1 document.

The declaration is the single source: the wrapper authenticates, rate-limits, checks the scope,
validates the query and body with the declared pydantic models, runs the view, serialises its
answer, sets the token's last use and commits; /api/v1/openapi.json and the docs page are built
from the same declarations. See app/api/__init__.py for an example.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import pydantic_core
from flask import Response, g, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from app.api import API_PREFIX, bp
from app.api.auth import SCOPES, authenticate, check_rate, check_scope, touch
from app.api.problems import PROBLEM_MIMETYPE, PROBLEM_TYPES, ApiProblem, validation_errors
from app.extensions import db

JSON_MIMETYPE = "application/json"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Endpoint:
    method: str
    rule: str  # Flask rule, relative to /api/v1
    name: str
    scope: str | None
    summary: str
    description: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: Any  # a pydantic model class, or None (no body: 204)
    status: int
    errors: tuple[int, ...] = field(default=())
    also: tuple[int, ...] = field(default=())  # other success statuses, same body


REGISTRY: list[Endpoint] = []


def _read_body(model: type[BaseModel]) -> BaseModel:
    mimetype = request.mimetype or ""
    if mimetype != JSON_MIMETYPE and not mimetype.endswith("+json"):
        raise ApiProblem(415, "Send the body as application/json.")
    raw = request.get_data(cache=False)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e.get("type") == "json_invalid" for e in errors):
            raise ApiProblem(400, "The body is not valid JSON.", slug="invalid-json",
                             title="Invalid JSON") from None
        raise ApiProblem(422, "The body is not valid.", slug="validation", title="Validation failed",
                         errors=validation_errors(errors)) from None


def _read_query(model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for key in request.args:
        items = request.args.getlist(key)
        values[key] = items if len(items) > 1 else items[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiProblem(422, "The query string is not valid.", slug="validation",
                         title="Validation failed",
                         errors=validation_errors(exc.errors(include_url=False, include_input=False))
                         ) from None


def _respond(value: Any, status: int) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple):
        value, status = value
    if value is None:
        return Response(status=204 if status == 200 else status)
    return Response(pydantic_core.to_json(value), status=status, mimetype=JSON_MIMETYPE)


def endpoint(method: str, rule: str, *, scope: str | None, summary: str, tag: str,
             body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
             response: Any = None, status: int = 200, description: str = "",
             errors: tuple[int, ...] = (), also: tuple[int, ...] = (),
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare `method rule` (rule relative to /api/v1) answering with `response` at `status`.

    `scope=None` makes the route public (only the OpenAPI document is). `errors` lists the
    problem statuses the route answers besides the usual 401/403/422/429; `also` other success
    statuses with the same body (e.g. 200 beside 201)."""
    method = method.upper()
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        name = view.__name__

        @wraps(view)
        def wrapper(**kwargs: Any) -> Any:
            try:
                if scope is not None:
                    token = authenticate()
                    check_rate(token)
                    check_scope(token, scope)
                    g.api_token = token
                if query is not None:
                    kwargs["query"] = _read_query(query)
                if body is not None:
                    kwargs["body"] = _read_body(body)
                answer = _respond(view(**kwargs), status)
                if scope is not None:
                    touch(g.api_token)
                db.session.commit()
                return answer
            except ApiProblem as problem:
                db.session.rollback()
                return problem.response()

        wrapper.required_scope = scope  # type: ignore[attr-defined]
        bp.add_url_rule(rule, endpoint=name, view_func=wrapper, methods=[method])
        REGISTRY.append(Endpoint(method=method, rule=rule, name=name, scope=scope, summary=summary,
                                 description=description or (view.__doc__ or "").strip(), tag=tag,
                                 body=body, query=query, response=response, status=status,
                                 errors=tuple(errors), also=tuple(also)))
        return wrapper

    return decorate


# --------------------------------------------------------------------------------------------
# OpenAPI 3.1
# --------------------------------------------------------------------------------------------

_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """A Flask rule as an OpenAPI path and its path parameters."""
    params = []
    for converter, name in _PARAM.findall(rule):
        schema: dict[str, Any] = {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule), params


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.get("$defs", {}).items():
        schemas.setdefault(name, sub)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": {k: v for k, v in prop.items() if k != "description"}}
        if prop.get("description"):
            param["description"] = prop["description"]
        out.append(param)
    return out


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "detail"],
            "properties": {"field": {"type": "string"}, "detail": {"type": "string"}}}},
    },
}

_ERROR_TEXT = {400: "Not JSON", 401: "No valid token", 403: "The token lacks the scope",
               404: "Not found", 409: "Conflict", 413: "Too large", 415: "Not application/json",
               422: "Validation failed; `errors` names the fields", 429: "Rate limited; see Retry-After"}


def openapi_document(version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered endpoint."""
    models: list[tuple[type[BaseModel], Any]] = []
    for ep in REGISTRY:
        if ep.body is not None:
            models.append((ep.body, "validation"))
        if isinstance(ep.response, type) and issubclass(ep.response, BaseModel):
            models.append((ep.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    problem_ref = {"$ref": "#/components/schemas/Problem"}

    paths: dict[str, dict[str, Any]] = {}
    for ep in sorted(REGISTRY, key=lambda e: (e.rule, e.method)):
        path, params = openapi_path(ep.rule)
        operation: dict[str, Any] = {
            "operationId": ep.name, "summary": ep.summary, "tags": [ep.tag],
        }
        if ep.description:
            operation["description"] = ep.description
        if ep.query is not None:
            params = params + _query_parameters(ep.query, schemas)
        if params:
            operation["parameters"] = params
        if ep.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                JSON_MIMETYPE: {"schema": refs[(ep.body, "validation")]}}}
        responses: dict[str, Any] = {}
        if ep.response is None:
            responses[str(ep.status if ep.status != 200 else 204)] = {"description": "Done"}
        else:
            for code in (ep.status, *ep.also):
                responses[str(code)] = {"description": "Success", "content": {
                    JSON_MIMETYPE: {"schema": refs[(ep.response, "serialization")]}}}
        codes = set(ep.errors)
        if ep.scope is not None:
            codes |= {401, 403, 429}
            operation["security"] = [{"bearer": [ep.scope]}]
        else:
            operation["security"] = []
        if ep.body is not None:
            codes |= {400, 413, 415, 422}
        if ep.query is not None:
            codes.add(422)
        for code in sorted(codes):
            responses[str(code)] = {"description": _ERROR_TEXT.get(code, "Error"),
                                    "content": {PROBLEM_MIMETYPE: {"schema": problem_ref}}}
        operation["responses"] = responses
        paths.setdefault(API_PREFIX + path, {})[ep.method.lower()] = operation

    tags = sorted({ep.tag for ep in REGISTRY})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sendboard API",
            "version": version,
            "description": (
                "Bearer tokens (created by an admin under API tokens) carry scopes; each "
                "operation's security names the scope it needs. Errors are RFC 9457 problem "
                "details. Times are ISO 8601 with a zone. Lists page with `limit` and `cursor`."),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "Scopes: " + "; ".join(f"{k}: {v}" for k, v in SCOPES.items())}},
        },
        "x-problem-types": {slug: text for slug, text in PROBLEM_TYPES.items()},
    }

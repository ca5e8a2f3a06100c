"""Registration of the API: its endpoint modules, the OpenAPI document, error handling and the
staff docs page (see app/api/__init__.py for how a request is handled)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from flask import Flask, Response, g, request
from flask_login import AnonymousUserMixin
from pydantic import RootModel

from app.api import API_MAX_BYTES, bp
from app.api.problems import ApiProblem
from app.api.registry import endpoint, openapi_document

_loaded = False


def load_endpoints() -> None:
    """Import every module of app/api/endpoints (each declares its routes on import)."""
    global _loaded
    if _loaded:
        return
    from app.api import endpoints

    for info in sorted(pkgutil.iter_modules(endpoints.__path__), key=lambda i: i.name):
        importlib.import_module(f"{endpoints.__name__}.{info.name}")
    _loaded = True


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


@endpoint("GET", "/openapi.json", scope=None, response=OpenApiDocument, tag="Meta",
          summary="This API's OpenAPI 3.1 document")
def openapi_json() -> Any:
    """Public: the document describes the API; calling it still needs a token."""
    return openapi_document()


@bp.before_request
def _api_request() -> Any:
    """Nobody is signed in for the API (a session cookie counts for nothing here), and a body
    larger than API_MAX_BYTES is refused before it is read."""
    g._login_user = AnonymousUserMixin()
    request.max_content_length = API_MAX_BYTES
    if request.content_length is not None and request.content_length > API_MAX_BYTES:
        return ApiProblem(413, f"The body is larger than {API_MAX_BYTES // (1024 * 1024)} MB.").response()
    return None


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def register_api(app: Flask) -> None:
    """Register the API blueprint (with every endpoint module) and the staff docs page."""
    load_endpoints()
    app.register_blueprint(bp)
    from app.api.admin import bp as admin_bp
    from app.api.docs import bp as docs_bp

    app.register_blueprint(docs_bp)
    app.register_blueprint(admin_bp)

"""The API reference for staff (any role), rendered from the OpenAPI document: /api/docs."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, render_template

from app.api.auth import SCOPES
from app.api.problems import PROBLEM_TYPES
from app.api.registry import openapi_document
from app.auth.permissions import requires

bp = Blueprint("api_docs", __name__, url_prefix="/api")


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            success = [(code, r) for code, r in op["responses"].items() if code.startswith("2")]
            out.append({
                "method": method.upper(), "path": path, "op": op,
                "scope": (op.get("security") or [{}])[0].get("bearer", [None])[0]
                if op.get("security") else None,
                "body_ref": _ref_name(body.get("schema", {})),
                "success": [(code, _ref_name(r.get("content", {}).get("application/json", {})
                                              .get("schema", {}))) for code, r in success],
                "problems": [code for code in op["responses"] if not code.startswith("2")],
            })
    return out


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return str(ref.rsplit("/", 1)[-1]) if ref else ""


@bp.route("/docs")
@requires("read")
def docs() -> Any:
    document = openapi_document()
    operations = _operations(document)
    tags = [t["name"] for t in document["tags"]]
    schemas = {name: json.dumps(schema, indent=2, ensure_ascii=False)
               for name, schema in document["components"]["schemas"].items()}
    return render_template("api/docs.html", document=document, operations=operations, tags=tags,
                           schemas=schemas, scopes=SCOPES, problem_types=PROBLEM_TYPES)

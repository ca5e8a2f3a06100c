"""The OpenAPI 3.1 document: valid, and naming every API route of the URL map with its scope."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError  # noqa: F401

from app.api.registry import REGISTRY


def _api_routes(app) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            out.add((path, method.lower()))
    return out


def test_the_document_is_valid_openapi_3_1_and_complete(app, client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any structural error
    documented = {(path, method) for path, methods in document["paths"].items() for method in methods}
    assert documented == _api_routes(app)
    assert len(documented) == len(REGISTRY)


def test_scopes_models_and_problems_are_declared(client):
    document = client.get("/api/v1/openapi.json").get_json()
    upsert = document["paths"]["/api/v1/contacts"]["post"]
    assert upsert["security"] == [{"bearer": ["contacts:write"]}]
    assert upsert["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ContactIn"}
    assert {"200", "201", "401", "403", "409", "422", "429"} <= set(upsert["responses"])
    assert upsert["responses"]["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}
    schemas = document["components"]["schemas"]
    assert "email" in schemas["ContactIn"]["required"]
    bulk_items = schemas["ContactsBulkIn"]["properties"]["contacts"]
    assert bulk_items["maxItems"] == 10_000
    tx = document["paths"]["/api/v1/transactions"]["post"]
    assert tx["security"] == [{"bearer": ["transactions:write"]}]
    params = {p["name"]: p for p in document["paths"]["/api/v1/contacts"]["get"]["parameters"]}
    assert {"limit", "cursor"} <= set(params)
    assert params["limit"]["schema"]["maximum"] == 1000
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"]}


def test_docs_page_for_any_staff_role(client, auth):
    assert client.get("/api/docs").status_code == 302  # signed out: to the sign-in page
    auth.login(role="viewer")
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "POST /api/v1/contacts/bulk" in html and "contacts:write" in html
    assert 'id="problem-validation"' in html and 'id="schema-ContactIn"' in html
    assert "<script>" not in html and "cdn" not in html.lower()

"""The OpenAPI document: committed as docs/openapi.json, documented in docs/api.md, safe by shape."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from api.harness import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = ".venv/bin/python -m keysentry.api.spec > docs/openapi.json"
# A request field by one of these names could point the service at a URL of the caller's choosing.
URL_LIKE = re.compile(r"url|uri|host|endpoint|callback|webhook|address|server|proxy", re.IGNORECASE)
# The one exception: the endpoint a tenant registers for its own events. It only ever receives
# signed events, redirects are not followed, and it must resolve to a public address (checked
# when connecting): tests/api/test_webhooks.py refuses loopback, private and metadata addresses.
TENANT_URLS = {("POST", "/v1/webhooks", "url")}
# The one response allowed to hold a secret: the webhook's signing secret, shown when registered.
SHOWN_ONCE = {("POST", "/v1/webhooks"): "WebhookCreated"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(api: Stack) -> dict[str, Any]:
    reply = await api.client.call("GET", "/openapi.json")
    assert reply.status == 200
    document: dict[str, Any] = reply.json
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_the_committed_document_is_the_served_one(served: dict[str, Any]) -> None:
    committed = json.loads((DOCS / "openapi.json").read_text(encoding="utf-8"))
    assert committed == served, f"docs/openapi.json is out of date; regenerate it with: {REGENERATE}"


async def test_every_error_is_a_problem_and_every_v1_route_needs_a_token(served: dict[str, Any]) -> None:
    for method, path, operation in _operations(served):
        for code, answer in operation["responses"].items():
            if int(code) >= 400:
                assert list(answer["content"]) == ["application/problem+json"], (method, path, code)
        if path.startswith("/v1"):
            assert operation.get("security") == [{"token": []}], (method, path)
            assert "401" in operation["responses"], (method, path)


def _properties(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def test_requests_forbid_extra_fields_and_take_no_url(served: dict[str, Any]) -> None:
    components = served["components"]["schemas"]
    bodies = 0
    for method, path, operation in _operations(served):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                continue  # a stored resource's id (webhook_id), looked up for the tenant, never fetched
            assert not URL_LIKE.search(parameter["name"]), (method, path, parameter["name"])
        body = operation.get("requestBody")
        if body is None:
            continue
        bodies += 1
        schema = _properties(body["content"]["application/json"]["schema"], components)
        assert schema.get("additionalProperties") is False, (method, path)
        for name in schema["properties"]:
            assert (method, path, name) in TENANT_URLS or not URL_LIKE.search(name), (method, path, name)
    assert bodies == 6


def _referenced(schema: Any, components: dict[str, Any], seen: set[str]) -> set[str]:
    """Names of the component schemas `schema` refers to, directly or through others."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                _referenced(components[name], components, seen)
        for value in schema.values():
            _referenced(value, components, seen)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, components, seen)
    return seen


async def test_secrets_are_write_only_and_never_in_a_response_schema(served: dict[str, Any]) -> None:
    components = served["components"]["schemas"]
    for name in ("ConnectionCreate", "DiagnoseRequest", "CredentialsUpdate"):
        for field in ("api_key", "secret"):
            assert components[name]["properties"][field]["writeOnly"] is True
    responses = {n: s for n, s in components.items() if n.endswith(("Out", "Result", "Page", "List"))}
    for name, schema in responses.items():
        assert not {"secret", "passphrase", "api_key"} & set(schema.get("properties", {})), name
    # Every schema any answer can hold, found through the operations (not by name)
    holding = 0
    for method, path, operation in _operations(served):
        for code, answer in operation["responses"].items():
            for name in _referenced(answer.get("content", {}), components, set()):
                fields = {"secret", "passphrase", "api_key"} & set(components[name].get("properties", {}))
                if fields and SHOWN_ONCE.get((method, path)) == name and code == "201":
                    holding += 1
                    continue
                assert not fields, (method, path, code, name)
    assert holding == len(SHOWN_ONCE)


async def test_docs_have_a_curl_example_for_every_operation(served: dict[str, Any]) -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    sections = re.split(r"\n### ", text)
    for method, path, _ in _operations(served):
        section = next((s for s in sections if s.startswith(f"`{method} {path}`")), None)
        assert section is not None, f"docs/api.md has no section ### `{method} {path}`"
        assert "curl " in section, f"docs/api.md: {method} {path} has no curl example"

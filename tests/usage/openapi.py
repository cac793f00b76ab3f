"""Check an API answer against the OpenAPI schema the server itself serves (/api/schema/).

drf-spectacular writes OpenAPI 3.0 (`nullable: true`); jsonschema speaks JSON Schema, so the
schema is converted once (`nullable` → a `null` alternative) and every `$ref` resolves inside the
served document.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import yaml
from django.test import Client


def _jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _jsonschema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def served_schema() -> dict:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    return _jsonschema(yaml.safe_load(response.content))


def response_schema(path: str, method: str, status: int) -> dict:
    operation = served_schema()["paths"][path][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, which its schema does not document"
    content = responses[str(status)].get("content", {})
    assert "application/json" in content, f"{method} {path} {status} has no JSON body in the schema"
    return content["application/json"]["schema"]


def assert_matches_schema(response, path: str, method: str = "post") -> Any:
    """The response's status is documented for the operation and its JSON body fits it."""
    schema = served_schema()
    body = json.loads(response.content)  # also proves the body is JSON (and UTF-8)
    validator = jsonschema.Draft7Validator(
        {**response_schema(path, method, response.status_code), "components": schema["components"]}
    )
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    assert not errors, f"{method} {path} {response.status_code}: {errors[0].message} in {body!r:.500}"
    return body

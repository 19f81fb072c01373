"""The omnichannel spec's response schemas, to check the extension's answers against (skipped without the spec)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "spec" / "omnichannel-integration.specs.yaml"


@cache
def spec() -> dict[str, Any] | None:
    """The spec as parsed YAML, or None when the file is absent."""
    return yaml.safe_load(SPEC_PATH.read_text()) if SPEC_PATH.is_file() else None


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and set(node) == {"$ref"} and not node["$ref"].startswith("#/components/schemas"):
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_matches_spec(operation_id: str, status: int, body: Any) -> None:
    """Validate ``body`` against the spec's schema for this operation and status (skipped without the spec)."""
    document = spec()
    if document is None:
        return  # reported once by test_the_omnichannel_spec_is_available
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    response = _resolve(document, operations[operation_id]["responses"][str(status)])
    schema = response["content"]["application/json"]["schema"]
    # A root holding the spec's components, so "#/components/schemas/..." references resolve; no format
    # checker: the spec's own "YYYY-MM-DD HH:MM" date-times are not RFC 3339 (see channels-spec.md §5).
    jsonschema.Draft7Validator({**schema, "components": document["components"]}).validate(body)


def assert_error_shape(body: Any, code: str) -> None:
    """The spec's error envelope: ``{"success": false, "data": {"message": str, "code": code}}``."""
    assert body["success"] is False
    assert body["data"]["code"] == code
    assert isinstance(body["data"]["message"], str) and body["data"]["message"]
    document = spec()
    if document is not None:
        schema = document["components"]["responses"]["400_BadRequest"]["content"]["application/json"]["schema"]
        jsonschema.Draft7Validator(schema).validate(body)

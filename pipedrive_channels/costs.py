"""Token cost of every Pipedrive operation, from the specs' ``x-token-cost``.

The table ships as package data (``costs.json``), generated from Pipedrive's OpenAPI files, so every call, the
four Channels endpoints and any future generic request alike, is charged what Pipedrive documents. Regenerate
it when Pipedrive publishes new specs::

    make costs    # python -m pipedrive_channels.costs ../shared/spec/openapi.yaml ../shared/spec/openapi-v2.yaml
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "DEFAULT_COST",
    "Operation",
    "deprecated",
    "find_operation",
    "generate",
    "generate_deprecated",
    "main",
    "operation_cost",
    "table",
]

DEFAULT_COST = {"v1": 20, "v2": 10}
"""What a path the table does not know is charged: that version's list cost, a conservative guess."""

_METHODS = ("get", "post", "put", "patch", "delete")


@cache
def _shipped() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("costs.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def table() -> Mapping[str, Mapping[str, int]]:
    """The shipped costs: ``{"v1": {"POST /channels": 10, ...}, "v2": {...}}``."""
    return {version: _shipped()[version] for version in ("v1", "v2")}


def deprecated() -> Mapping[str, frozenset[str]]:
    """The operations each spec marks deprecated: ``{"v1": {"POST /channels", ...}, "v2": ...}``."""
    return {version: frozenset(ops) for version, ops in _shipped()["deprecated"].items()}


@attrs.frozen
class Operation:
    """A documented operation a concrete path was matched to."""

    version: str
    method: str
    template: str
    cost: int
    deprecated: bool
    search: bool
    """Search operations (``.../search``, ``itemSearch``) have their own burst limit."""


@cache
def _templates(version: str, method: str, segments: int) -> tuple[tuple[str, tuple[str, ...], int], ...]:
    # (template, its segments, how many are literal) for one method and path length.
    found = []
    for operation in table()[version]:
        op_method, template = operation.split(" ", 1)
        parts = tuple(template.strip("/").split("/"))
        if op_method == method and len(parts) == segments:
            found.append((template, parts, sum(not part.startswith("{") for part in parts)))
    return tuple(found)


@lru_cache(maxsize=4096)
def find_operation(version: str, method: str, path: str) -> Operation | None:
    """Match a concrete path (``/deals/123``) to its documented template (``/deals/{id}``), or None.

    When several templates match, the one with the most literal segments wins, so ``/leads/search`` is the
    search operation and never ``/leads/{id}``.
    """
    method = method.upper()
    segments = tuple(path.split("?", 1)[0].strip("/").split("/"))
    best: tuple[str, int] | None = None
    for template, parts, literals in _templates(version, method, len(segments)):
        matches = all(part.startswith("{") or part == segment for part, segment in zip(parts, segments, strict=True))
        if matches and (best is None or literals > best[1]):
            best = (template, literals)
    if best is None:
        return None
    template = best[0]
    key = f"{method} {template}"
    search = template.endswith("/search") or template.startswith("/itemSearch")
    return Operation(version, method, template, table()[version][key], key in deprecated()[version], search)


def operation_cost(method: str, template: str, *, version: str = "v1") -> int:
    """The documented cost of ``method template`` (e.g. ``"DELETE", "/channels/{id}"``).

    :raises KeyError: the spec lists no cost for that operation.
    """
    return table()[version][f"{method.upper()} {template}"]


def generate_deprecated(spec: Mapping[str, Any]) -> list[str]:
    """The ``"METHOD /path/template"`` of every operation a parsed OpenAPI document marks deprecated."""
    return sorted(
        f"{method.upper()} {path}"
        for path, item in spec.get("paths", {}).items()
        for method in _METHODS
        if isinstance(item, dict) and isinstance(item.get(method), dict) and item[method].get("deprecated")
    )


def generate(spec: Mapping[str, Any]) -> dict[str, int]:
    """Extract ``{"METHOD /path/template": cost}`` from a parsed OpenAPI document."""
    costs: dict[str, int] = {}
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if isinstance(operation, dict) and "x-token-cost" in operation:
                costs[f"{method.upper()} {path}"] = int(operation["x-token-cost"])
    return dict(sorted(costs.items()))


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table (costs per version, and the deprecated operations) for the v1 and v2 specs given as paths."""
    import yaml  # a dev dependency: only regenerating the table needs it

    paths = list(sys.argv[1:] if argv is None else argv)
    if len(paths) != 2:
        raise SystemExit("usage: python -m pipedrive_channels.costs V1_SPEC V2_SPEC")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's loader is ~10x faster on these specs
    specs = {
        version: yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)
        for version, path in zip(("v1", "v2"), paths, strict=False)
    }
    result: dict[str, Any] = {version: generate(spec) for version, spec in specs.items()}
    result["deprecated"] = {version: generate_deprecated(spec) for version, spec in specs.items()}
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

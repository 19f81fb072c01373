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
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["generate", "main", "operation_cost", "table"]

_METHODS = ("get", "post", "put", "patch", "delete")


@cache
def table() -> Mapping[str, Mapping[str, int]]:
    """The shipped table: ``{"v1": {"POST /channels": 10, ...}, "v2": {...}}``."""
    text = resources.files(__package__).joinpath("costs.json").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, int]] = json.loads(text)
    return loaded


def operation_cost(method: str, template: str, *, version: str = "v1") -> int:
    """The documented cost of ``method template`` (e.g. ``"DELETE", "/channels/{id}"``).

    :raises KeyError: the spec lists no cost for that operation.
    """
    return table()[version][f"{method.upper()} {template}"]


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
    """Print the table for the v1 spec and, optionally, the v2 spec given as paths."""
    import yaml  # a dev dependency: only regenerating the table needs it

    paths = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(paths) <= 2:
        raise SystemExit("usage: python -m pipedrive_channels.costs V1_SPEC [V2_SPEC]")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's loader is ~10x faster on these specs
    result = {
        version: generate(yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader))
        for version, path in zip(("v1", "v2"), paths, strict=False)
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

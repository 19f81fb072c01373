"""The operation-cost table shipped with the package, and the generator that makes it from Pipedrive's specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipedrive_channels.costs import generate, operation_cost, table

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec"


def test_the_channels_operations_cost_what_the_spec_says() -> None:
    assert operation_cost("POST", "/channels") == 10
    assert operation_cost("post", "/channels/messages/receive") == 10
    assert operation_cost("DELETE", "/channels/{id}") == 6
    assert operation_cost("DELETE", "/channels/{channel-id}/conversations/{conversation-id}") == 6
    assert operation_cost("GET", "/deals/{id}", version="v2") == 1
    with pytest.raises(KeyError):
        operation_cost("GET", "/no/such/path")


def test_the_table_covers_every_costed_operation() -> None:
    assert len(table()["v1"]) == 213 and len(table()["v2"]) == 158


def test_generate_reads_x_token_cost_per_operation() -> None:
    spec = {"paths": {"/a/{id}": {"get": {"x-token-cost": 2}, "delete": {}, "parameters": []},
                      "/b": {"post": {"x-token-cost": "5"}}}}
    assert generate(spec) == {"GET /a/{id}": 2, "POST /b": 5}


@pytest.mark.skipif(not (SPEC / "openapi.yaml").exists(), reason="the specs are not beside this checkout")
def test_the_shipped_table_is_what_the_generator_makes_from_the_specs() -> None:
    yaml = pytest.importorskip("yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert generate(yaml.load((SPEC / "openapi.yaml").read_text(), Loader=loader)) == table()["v1"]
    assert generate(yaml.load((SPEC / "openapi-v2.yaml").read_text(), Loader=loader)) == table()["v2"]

"""What each route costs at the fake: Pipedrive's documented ``x-token-cost``, from its OpenAPI files.

The fake's own table, never the SDK's: it is what :attr:`~FakePipedrive.tokens_spent` adds up, so a test measures
at the server what a job spent. Keys are ``"METHOD template"`` of the API version the route belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping

V1: Mapping[str, int] = {
    "POST /channels": 10,
    "DELETE /channels/{id}": 6,
    "POST /channels/messages/receive": 10,
    "DELETE /channels/{channel-id}/conversations/{conversation-id}": 6,
    "GET /notes": 20,
    "POST /notes": 10,
    "GET /notes/{id}": 2,
    "PUT /notes/{id}": 10,
    "DELETE /notes/{id}": 6,
    "GET /webhooks": 10,
    "POST /webhooks": 10,
    "DELETE /webhooks/{id}": 6,
    "GET /users/me": 2,
}
V2: Mapping[str, int] = {
    "GET /persons/search": 20,
    "POST /persons": 5,
    "GET /persons/{id}": 1,
    "PATCH /persons/{id}": 5,
    "DELETE /persons/{id}": 3,
}
# A generic collection (FakePipedrive.add_collection) costs what most of Pipedrive's do: v1 lists 20, items 2,
# writes 10 (deals, persons, ...); v2 lists 10, items 1, writes 5.
_COLLECTION = {"v1": {"list": 20, "item": 2, "POST": 10}, "v2": {"list": 10, "item": 1, "POST": 5}}


def collection_cost(version: str, method: str, listing: bool) -> int:
    """A generic collection request's cost: a ``POST``, or a ``GET`` of the list (``listing``) or of one item."""
    costs = _COLLECTION[version]
    return costs["POST"] if method == "POST" else costs["list" if listing else "item"]

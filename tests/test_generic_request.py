"""Any Pipedrive endpoint, v1 and v2, through the same budget: cost lookup, base URLs, paths, pages, searches."""

from __future__ import annotations

import logging
import warnings

import pytest

from pipedrive_channels import ChannelsClient, OAuthToken, RateBudget, RetryPolicy, ValidationError, _call
from pipedrive_channels.costs import find_operation
from pipedrive_channels.testing import FakePipedrive


def client_for(fake: FakePipedrive, budget: RateBudget | None = None) -> ChannelsClient:
    return ChannelsClient("token", base_url=fake.base_url, budget=budget or RateBudget(requests_per_window=1_000),
                          retry=RetryPolicy(backoff_base=0.01))


@pytest.mark.parametrize(
    ("version", "method", "path", "template", "cost"),
    [
        ("v2", "GET", "/deals/123", "/deals/{id}", 1),
        ("v2", "GET", "/deals", "/deals", 10),
        ("v2", "POST", "/deals", "/deals", 5),
        ("v2", "DELETE", "/deals/9", "/deals/{id}", 3),
        ("v2", "GET", "/deals/search", "/deals/search", 20),
        ("v2", "GET", "/deals/7/followers", "/deals/{id}/followers", 10),
        ("v1", "GET", "/leads/search", "/leads/search", 40),
        ("v1", "GET", "/leads/0f4a-11", "/leads/{id}", 2),
        ("v1", "POST", "/channels", "/channels", 10),
        ("v1", "DELETE", "/channels/a/conversations/b", "/channels/{channel-id}/conversations/{conversation-id}", 6),
    ],
)
def test_concrete_paths_find_their_documented_operation(
    version: str, method: str, path: str, template: str, cost: int
) -> None:
    operation = find_operation(version, method, path)
    assert operation is not None and (operation.template, operation.cost) == (template, cost)
    assert operation.search == template.endswith("/search")


def test_unknown_paths_have_no_operation() -> None:
    assert find_operation("v1", "GET", "/no/such/thing") is None
    assert find_operation("v2", "PATCH", "/deals") is None


def test_path_fills_and_percent_encodes_placeholders() -> None:
    assert ChannelsClient.path("/persons/{id}/deals", id="a/b c?") == "/persons/a%2Fb%20c%3F/deals"
    assert ChannelsClient.path("/deals/{id}", id=42) == "/deals/42"
    assert ChannelsClient.path("/channels/{channel-id}", **{"channel-id": "x"}) == "/channels/x"
    with pytest.raises(ValidationError, match="id"):
        ChannelsClient.path("/deals/{id}")
    with pytest.raises(ValidationError, match="extra"):
        ChannelsClient.path("/deals/{id}", id=1, extra=2)
    with pytest.raises(ValidationError, match="id"):
        ChannelsClient.path("/deals/{id}", id="..")


def test_the_v2_base_url_sits_beside_the_v1_one() -> None:
    assert ChannelsClient("t")._transport.base_url_v2 == "https://api.pipedrive.com/api/v2"
    token = OAuthToken("t", api_domain="https://acme.pipedrive.com")
    assert ChannelsClient(token)._transport.base_url_v2 == "https://acme.pipedrive.com/api/v2"
    assert ChannelsClient("t", base_url="http://127.0.0.1:9/v1")._transport.base_url_v2 == "http://127.0.0.1:9/api/v2"


async def test_bad_requests_are_refused_before_sending() -> None:
    client = ChannelsClient("t")
    for kwargs, field in (({"method": "TRACE"}, "method"), ({"version": "v3"}, "version"),
                          ({"path": "/deals?limit=5"}, "path"), ({"path": "deals"}, "path")):
        arguments = {"method": "GET", "path": "/deals", **kwargs}
        version = arguments.pop("version", "v1")
        with pytest.raises(ValidationError) as info:
            await client.request(arguments["method"], arguments["path"], version=version)
        assert info.value.field == field


async def test_a_v2_call_is_charged_its_documented_cost(fake: FakePipedrive) -> None:
    fake.add_collection("/deals", [{"title": "first"}], version="v2")
    budget = RateBudget(requests_per_window=100, tokens_per_day=1_000)
    async with client_for(fake, budget) as client:
        created = await client.request("POST", "/deals", version="v2", json={"title": "Chat with Ada"})
        fetched = await client.request("GET", client.path("/deals/{id}", id=created.data["id"]), version="v2")
    assert created.data == {"title": "Chat with Ada", "id": 2} and fetched.data == created.data
    assert fetched.status == 200 and fetched.headers["x-ratelimit-limit"] == "80"
    assert [r.path for r in fake.requests] == ["/api/v2/deals", "/api/v2/deals/2"]
    assert budget.stats().tokens_charged == 5 + 1


async def test_an_unknown_path_is_charged_the_list_cost_and_logged_once(
    fake: FakePipedrive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipedrive_channels")
    fake.add_collection("/brandNewThings", [{"n": 1}])
    budget = RateBudget(requests_per_window=100, tokens_per_day=1_000)
    async with client_for(fake, budget) as client:
        for _ in range(3):
            await client.request("GET", "/brandNewThings")
        await client.request("GET", "/brandNewThings", cost=3)
    assert budget.stats().tokens_charged == 3 * 20 + 3
    assert sum("not in the cost table" in r.getMessage() for r in caplog.records) == 1


async def test_offset_pages_of_v1(fake: FakePipedrive) -> None:
    fake.add_collection("/leads", [{"n": n} for n in range(250)])
    budget = RateBudget(requests_per_window=100, tokens_per_day=10_000)
    async with client_for(fake, budget) as client:
        items = [item async for item in client.paginate("/leads", params={"limit": 100, "archived_status": False})]
    assert [item["n"] for item in items] == list(range(250))
    pages = [r for r in fake.requests if r.path == "/v1/leads"]
    assert len(pages) == 3 and budget.stats().requests_admitted == 3
    cost = find_operation("v1", "GET", "/leads")
    assert cost is not None and budget.stats().tokens_charged == 3 * cost.cost


async def test_cursor_pages_of_v2(fake: FakePipedrive) -> None:
    fake.add_collection("/persons", [{"n": n} for n in range(250)], version="v2")
    async with client_for(fake) as client:
        items = [item async for item in client.paginate("/persons", version="v2", params={"limit": 100})]
    assert [item["n"] for item in items] == list(range(250))
    assert [r.path for r in fake.requests] == ["/api/v2/persons"] * 3


async def test_searches_keep_to_their_own_burst_limit(fake: FakePipedrive) -> None:
    fake.add_collection("/deals/search", [{"n": 1}], version="v2")
    fake.add_collection("/deals", [{"n": 1}], version="v2")
    async with client_for(fake) as client:  # 1,000 requests per 2 s in general, 10 per 2 s for searches
        for _ in range(12):
            await client.request("GET", "/deals/search", version="v2", params={"term": "ada"})
        for _ in range(20):
            await client.request("GET", "/deals", version="v2")  # not a search: not held back
    searches = [r.at for r in fake.requests if r.path.endswith("/search")]
    lists = [r.at for r in fake.requests if r.path == "/api/v2/deals"]
    assert searches[10] - searches[0] >= 2.0 and searches[9] - searches[0] < 1.0
    assert lists[-1] - lists[0] < 1.0


async def test_deprecated_operations_warn_once(fake: FakePipedrive) -> None:
    _call._warned.clear()
    fake.add_collection("/deals/archived", [{"n": 1}])
    async with client_for(fake) as client:
        with pytest.warns(DeprecationWarning, match="GET /deals/archived"):
            await client.request("GET", "/deals/archived")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await client.request("GET", "/deals/archived")  # once only
        with pytest.warns(DeprecationWarning, match="POST /channels"):
            await client.add_channel(name="n", provider_channel_id="ch")

"""The fake's v2 persons and v1 notes, through the SDK's generic ``request`` (and raw aiohttp for bad shapes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from factories import TOKEN

from pipedrive_channels import ChannelsClient, RateBudget, RetryPolicy
from pipedrive_channels.errors import BadRequestError, NotFoundError
from pipedrive_channels.testing import FakePipedrive, _server


@pytest.fixture
async def client(fake: FakePipedrive) -> AsyncIterator[ChannelsClient]:
    budget = RateBudget(requests_per_window=1_000)
    async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=budget,
                              retry=RetryPolicy(backoff_base=0.01)) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def raw(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json()


def v2(fake: FakePipedrive) -> str:
    return fake.root_url + "/api/v2"


async def create_person(client: ChannelsClient, **body: Any) -> dict[str, Any]:
    response = await client.request("POST", "/persons", version="v2", json=body)
    assert response.status == 200
    data: dict[str, Any] = response.data
    return data


async def search(client: ChannelsClient, term: str, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    response = await client.request("GET", "/persons/search", version="v2", params={"term": term, **params})
    return response.data["items"], response.additional_data["next_cursor"]


async def found_ids(client: ChannelsClient, term: str, **params: Any) -> list[int]:
    items, _ = await search(client, term, **params)
    return [entry["item"]["id"] for entry in items]


async def add_note(client: ChannelsClient, person_id: int, content: str = "<p>hi</p>", **body: Any) -> dict[str, Any]:
    response = await client.request("POST", "/notes", json={"content": content, "person_id": person_id, **body})
    data: dict[str, Any] = response.data
    return data


# -- persons ------------------------------------------------------------------------------------------------


async def test_a_person_is_created_answered_and_deleted(fake: FakePipedrive, client: ChannelsClient) -> None:
    ada = await create_person(client, name="Ada Lovelace", emails=[{"value": "ada@example.com", "primary": True}],
                              phones=[{"value": "+44 20 7946 0000", "label": "mobile"}])
    assert isinstance(ada["id"], int) and ada["name"] == "Ada Lovelace"
    assert ada["emails"] == [{"value": "ada@example.com", "primary": True, "label": "work"}]
    assert ada["phones"] == [{"value": "+44 20 7946 0000", "primary": False, "label": "mobile"}]
    datetime.strptime(ada["add_time"], "%Y-%m-%dT%H:%M:%SZ")
    assert ada["update_time"] == ada["add_time"] and ada["is_deleted"] is False
    bob = await create_person(client, name="Bob")
    assert bob["id"] > ada["id"] and bob["emails"] == [] and bob["phones"] == []

    assert (await client.request("GET", f"/persons/{ada['id']}", version="v2")).data == ada
    assert fake.persons[ada["id"]] == ada
    deleted = await client.request("DELETE", f"/persons/{ada['id']}", version="v2")
    assert deleted.data == {"id": ada["id"]}
    for method in ("GET", "DELETE"):
        with pytest.raises(NotFoundError):
            await client.request(method, f"/persons/{ada['id']}", version="v2")
    assert list(fake.persons) == [bob["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": 7}, "name"),
        ({"name": "A", "emails": "a@b.c"}, "emails"),
        ({"name": "A", "emails": ["a@b.c"]}, "emails[0]"),
        ({"name": "A", "emails": [{"primary": True}]}, "emails[0].value"),
        ({"name": "A", "emails": [{"value": ""}]}, "emails[0].value"),
        ({"name": "A", "phones": [{"value": "1", "primary": "yes"}]}, "phones[0].primary"),
        ({"name": "A", "phones": [{"value": "1"}, {"value": "2", "label": 3}]}, "phones[1].label"),
        ({"name": "A", "phones": [{"value": "1", "number": "1"}]}, "phones[0].number"),
        ({"name": "A", "phones": [{"value": "1"}] * 101}, "phones"),
        ({"name": "A", "add_time": "yesterday"}, "add_time"),
    ],
)
async def test_a_bad_person_is_refused_naming_the_field(
    fake: FakePipedrive, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    status, answer = await raw(http, "POST", f"{v2(fake)}/persons", json=body)
    assert status == 400 and answer["success"] is False
    assert answer["error"].startswith(f"Validation failed: {field}: ")
    assert fake.persons == {}


async def test_a_body_that_is_no_object_is_refused(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    for body in (b"[1]", b"not json", b"", b"[" * 100_000):  # the last nested past any stack
        status, answer = await raw(http, "POST", f"{v2(fake)}/persons", data=body)
        assert (status, answer["error"]) == (400, "Validation failed: body: must be a JSON object")


async def test_a_person_id_that_is_no_integer_is_refused(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    for tail in ("abc", "-1", "0", "1" * 40):
        status, answer = await raw(http, "GET", f"{v2(fake)}/persons/{tail}")
        assert status == 400 and answer["error"].startswith("Validation failed: id: ")


def test_add_person_and_delete_person(fake: FakePipedrive) -> None:
    first = fake.add_person("Ada", phones=["+1 555"], emails=["ada@example.com", "ada@work.example"])
    second = fake.add_person("Ada", add_time=datetime(2020, 1, 1))
    assert second > first
    person = fake.persons[first]
    assert [(e["value"], e["primary"]) for e in person["emails"]] == [("ada@example.com", True),
                                                                      ("ada@work.example", False)]
    assert person["phones"][0]["value"] == "+1 555" and fake.persons[second]["add_time"] == "2020-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="name"):
        fake.add_person(" ")
    with pytest.raises(ValueError, match=r"phones\[0\]\.value"):
        fake.add_person("Eve", phones=[""])
    fake.delete_person(first)
    assert list(fake.persons) == [second]
    with pytest.raises(KeyError):
        fake.delete_person(first)
    with pytest.raises(TypeError):
        fake.persons[99] = {}  # type: ignore[index]  # a read-only view


# -- search -------------------------------------------------------------------------------------------------


async def test_exact_search_by_each_field(fake: FakePipedrive, client: ChannelsClient) -> None:
    ada = fake.add_person("Ada Lovelace", phones=["+372 5555 5555"], emails=["Ada@Example.com"])
    fake.add_person("Ada Lovelace-King", phones=["+372 5555 55551"], emails=["ada@example.com.au"])
    assert await found_ids(client, "ada@example.COM", fields="email", exact_match="true") == [ada]
    # Phones compare with every space removed, nothing else normalised.
    assert await found_ids(client, "+37255555555", fields="phone", exact_match="true") == [ada]
    assert await found_ids(client, " +372 555 555 55 ", fields="phone", exact_match="true") == [ada]
    assert await found_ids(client, "37255555555", fields="phone", exact_match="true") == []
    assert await found_ids(client, "ada lovelace", fields="name", exact_match="true") == [ada]
    await add_note(client, ada, "Met at the Analytical Engine demo")
    assert await found_ids(client, "met at the analytical engine demo", fields="notes", exact_match="1") == [ada]
    items, cursor = await search(client, "ada@example.com", fields="email", exact_match="true")
    assert cursor is None and items[0]["result_score"] == 1.0
    assert items[0]["item"] == {
        "id": ada, "type": "person", "name": "Ada Lovelace", "phones": ["+372 5555 5555"],
        "emails": ["Ada@Example.com"], "visible_to": 3, "owner": {"id": 1}, "organization": None,
        "custom_fields": [], "notes": [],
    }


async def test_substring_search_by_each_field(fake: FakePipedrive, client: ChannelsClient) -> None:
    ada = fake.add_person("Ada Lovelace", phones=["+372 5555 5555"], emails=["ada@example.com"])
    bob = fake.add_person("Bob Lovelace", phones=["+1 202 555 0100"], emails=["bob@example.org"])
    assert await found_ids(client, "lovelace", fields="name") == [ada, bob]
    assert await found_ids(client, "example.org", fields="email") == [bob]
    assert await found_ids(client, "2025550", fields="phone") == [bob]
    await add_note(client, bob, "<p>Wants a <b>quote</b></p>")
    assert await found_ids(client, "QUOTE", fields="notes") == [bob]
    assert await found_ids(client, "lovelace", fields="custom_fields") == []  # the fake holds none
    assert await found_ids(client, "lovelace", fields="email,phone") == []  # only the fields asked for
    assert await found_ids(client, "lovelace") == [ada, bob]  # all fields by default
    assert await found_ids(client, "lovelace", exact_match="false") == [ada, bob]
    items, _ = await search(client, "ada", fields="name")
    assert 0 < items[0]["result_score"] < 1


async def test_search_answers_oldest_first_in_cursor_pages(fake: FakePipedrive, client: ChannelsClient) -> None:
    newest = fake.add_person("Sam", phones=["555"])
    ids = [fake.add_person("Sam", phones=["555"], add_time=datetime(2021, 1, day)) for day in (3, 1, 2, 4)]
    oldest_first = [ids[1], ids[2], ids[0], ids[3], newest]
    pages, cursor, seen = 0, None, []
    while True:
        params = {"fields": "phone", "exact_match": "true", "limit": 2, **({"cursor": cursor} if cursor else {})}
        items, cursor = await search(client, "555", **params)
        pages += 1
        seen += [entry["item"]["id"] for entry in items]
        if cursor is None:
            break
        assert isinstance(cursor, str) and len(items) == 2
    assert (pages, seen) == (3, oldest_first)


async def test_a_person_deleted_between_pages_moves_no_other(fake: FakePipedrive, client: ChannelsClient) -> None:
    ids = [fake.add_person(f"Kim {n}") for n in range(4)]
    items, cursor = await search(client, "kim", limit=2)
    fake.delete_person(ids[1])
    items, cursor = await search(client, "kim", limit=2, cursor=cursor)
    assert [entry["item"]["id"] for entry in items] == ids[2:] and cursor is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "term"),
        ({"term": "a"}, "term"),  # 2 characters at least, or 1 with exact_match
        ({"term": " a "}, "term"),
        ({"term": "ada", "fields": "address"}, "fields"),
        ({"term": "ada", "fields": "name,"}, "fields"),
        ({"term": "ada", "exact_match": "yes"}, "exact_match"),
        ({"term": "ada", "limit": "0"}, "limit"),
        ({"term": "ada", "limit": "501"}, "limit"),
        ({"term": "ada", "limit": "ten"}, "limit"),
        ({"term": "ada", "cursor": "not-a-cursor"}, "cursor"),
        ({"term": "ada", "cursor": "W1tb" * 2000}, "cursor"),  # "[[[[..." nested past the stack
    ],
)
async def test_a_bad_search_is_refused_naming_the_parameter(
    fake: FakePipedrive, http: aiohttp.ClientSession, params: dict[str, str], field: str
) -> None:
    status, answer = await raw(http, "GET", f"{v2(fake)}/persons/search", params=params)
    assert status == 400 and answer["error"].startswith(f"Validation failed: {field}: ")


async def test_a_one_character_exact_search_is_allowed(fake: FakePipedrive, client: ChannelsClient) -> None:
    person = fake.add_person("Q")
    assert await found_ids(client, "q", exact_match="true") == [person]
    with pytest.raises(BadRequestError, match="term"):
        await search(client, "q")


# -- notes --------------------------------------------------------------------------------------------------


async def test_a_note_is_created_answered_updated_and_deleted(fake: FakePipedrive, client: ChannelsClient) -> None:
    person = fake.add_person("Ada")
    content = "<p>10:00 Ada: <script>alert(1)</script> ünïcødé 🙂</p>"
    note = await add_note(client, person, content, add_time="2026-01-02 03:04:05")
    assert note["content"] == content  # stored as sent, never sanitised
    assert (note["person_id"], note["add_time"], note["person"]) == (person, "2026-01-02 03:04:05", {"name": "Ada"})
    assert note["deal_id"] is None and note["active_flag"] is True
    datetime.strptime(note["update_time"], "%Y-%m-%d %H:%M:%S")
    assert (await client.request("GET", f"/notes/{note['id']}")).data == note
    assert fake.notes[note["id"]]["content"] == content

    updated = (await client.request("PUT", f"/notes/{note['id']}", json={"content": "<p>two lines</p>"})).data
    assert (updated["id"], updated["content"]) == (note["id"], "<p>two lines</p>")
    assert updated["add_time"] == note["add_time"]
    moved = (await client.request("PUT", f"/notes/{note['id']}", json={"add_time": "2025-12-31 23:59:59"})).data
    assert (moved["content"], moved["add_time"]) == ("<p>two lines</p>", "2025-12-31 23:59:59")

    assert (await client.request("DELETE", f"/notes/{note['id']}")).data is True
    for method in ("GET", "DELETE"):
        with pytest.raises(NotFoundError):
            await client.request(method, f"/notes/{note['id']}")
    assert fake.notes == {}


async def test_notes_are_served_under_api_v1_too(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    person = fake.add_person("Ada")
    body = {"content": "x", "person_id": person}
    status, answer = await raw(http, "POST", f"{fake.root_url}/api/v1/notes", json=body)
    assert status == 200
    assert (await raw(http, "GET", f"{fake.root_url}/api/v1/notes/{answer['data']['id']}"))[0] == 200


async def test_a_persons_notes_list_newest_first_in_offset_pages(fake: FakePipedrive, client: ChannelsClient) -> None:
    ada, bob = fake.add_person("Ada"), fake.add_person("Bob")
    days = (2, 5, 1, 4, 3)
    made = [await add_note(client, ada, f"note {day}", add_time=f"2026-01-{day:02} 12:00:00") for day in days]
    await add_note(client, bob, "Bob's")
    first = await client.request("GET", "/notes", params={"person_id": ada, "limit": 2})
    assert [note["content"] for note in first.data] == ["note 5", "note 4"]
    assert first.additional_data == {
        "pagination": {"start": 0, "limit": 2, "more_items_in_collection": True, "next_start": 2}
    }
    last = await client.request("GET", "/notes", params={"person_id": ada, "limit": 2, "start": 4})
    assert [note["content"] for note in last.data] == ["note 1"]
    assert last.additional_data == {"pagination": {"start": 4, "limit": 2, "more_items_in_collection": False}}
    every = [note async for note in client.paginate("/notes", params={"person_id": ada, "limit": 2})]
    assert [note["content"] for note in every] == ["note 5", "note 4", "note 3", "note 2", "note 1"]
    by_id = await client.request("GET", "/notes", params={"person_id": ada, "sort": "id ASC"})
    assert [note["id"] for note in by_id.data] == [note["id"] for note in made]
    everyone = await client.request("GET", "/notes")
    assert len(everyone.data) == 6


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"person_id": 1}, "content"),
        ({"content": "", "person_id": 1}, "content"),
        ({"content": " \n", "person_id": 1}, "content"),
        ({"content": ["x"], "person_id": 1}, "content"),
        ({"content": "x" * 100_001, "person_id": 1}, "content"),
        ({"content": "x"}, "person_id"),
        ({"content": "x", "person_id": 1, "deal_id": 2}, "person_id"),
        ({"content": "x", "person_id": "1"}, "person_id"),
        ({"content": "x", "person_id": True}, "person_id"),
        ({"content": "x", "person_id": 1, "add_time": "2026-01-02T03:04:05Z"}, "add_time"),
        ({"content": "x", "person_id": 1, "add_time": "2026-13-02 03:04:05"}, "add_time"),
        ({"content": "x", "person_id": 1, "add_time": "2026-01-02 03:04"}, "add_time"),
        ({"content": "x", "person_id": 1, "add_time": 1767322800}, "add_time"),
    ],
)
async def test_a_bad_note_is_refused_naming_the_field(
    fake: FakePipedrive, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    assert fake.add_person("Ada") == 1
    status, answer = await raw(http, "POST", f"{fake.base_url}/notes", json=body)
    assert status == 400 and answer["error"].startswith(f"Validation failed: {field}: ")
    assert fake.notes == {}


async def test_content_of_exactly_100000_characters_is_taken(fake: FakePipedrive, client: ChannelsClient) -> None:
    person = fake.add_person("Ada")
    content = "\U0001f642" * 100_000  # characters, not bytes: 400 KB of UTF-8, 1.2 MB of escaped JSON
    note = await add_note(client, person, content)
    assert fake.notes[note["id"]]["content"] == content
    with pytest.raises(BadRequestError, match="content"):
        await client.request("PUT", f"/notes/{note['id']}", json={"content": content + "x"})
    assert fake.notes[note["id"]]["content"] == content


async def test_notes_of_unknown_or_deleted_persons_are_not_found(fake: FakePipedrive, client: ChannelsClient) -> None:
    with pytest.raises(NotFoundError, match="Person not found"):
        await add_note(client, 404)
    person = fake.add_person("Ada")
    note = await add_note(client, person)
    fake.delete_person(person)  # its notes go with it
    assert fake.notes == {}
    with pytest.raises(NotFoundError):
        await client.request("PUT", f"/notes/{note['id']}", json={"content": "late line"})
    with pytest.raises(NotFoundError):
        await client.request("GET", f"/notes/{note['id']}")
    other = fake.add_person("Bob")
    kept = await add_note(client, other)
    with pytest.raises(NotFoundError, match="Person not found"):
        await client.request("PUT", f"/notes/{kept['id']}", json={"person_id": person})
    assert (await client.request("GET", "/notes", params={"person_id": person})).data == []


async def test_deleting_a_person_through_the_api_deletes_its_notes(
    fake: FakePipedrive, client: ChannelsClient
) -> None:
    ada, bob = fake.add_person("Ada"), fake.add_person("Bob")
    await add_note(client, ada)
    kept = await add_note(client, bob)
    await client.request("DELETE", f"/persons/{ada}", version="v2")
    assert list(fake.notes) == [kept["id"]]


# -- tokens, windows, faults ------------------------------------------------------------------------------


async def test_tokens_spent_at_the_server_follow_the_documented_costs(
    fake: FakePipedrive, client: ChannelsClient
) -> None:
    await client.add_channel(name="Chat", provider_channel_id="ch1")  # 10
    person = (await create_person(client, name="Ada"))["id"]  # 5
    await client.request("GET", f"/persons/{person}", version="v2")  # 1
    await search(client, "Ada", fields="name", exact_match="true")  # 20
    note = await add_note(client, person)  # 10
    await client.request("PUT", f"/notes/{note['id']}", json={"content": "y"})  # 10
    await client.request("GET", f"/notes/{note['id']}")  # 2
    await client.request("GET", "/notes", params={"person_id": person})  # 20
    with pytest.raises(NotFoundError):
        await add_note(client, 999)  # 10: a refused request is charged too
    await client.request("DELETE", f"/notes/{note['id']}")  # 6
    await client.request("DELETE", f"/persons/{person}", version="v2")  # 3
    assert fake.tokens_spent == 10 + 5 + 1 + 20 + 10 + 10 + 2 + 20 + 10 + 6 + 3
    assert [r.cost for r in fake.requests] == [10, 5, 1, 20, 10, 10, 2, 20, 10, 6, 3]


async def test_channels_and_collections_spend_their_documented_costs(
    fake: FakePipedrive, client: ChannelsClient
) -> None:
    fake.add_collection("/deals", [{"id": 1, "title": "a"}], version="v2")
    fake.add_collection("/deals", [{"id": 1, "title": "a"}])
    await client.request("GET", "/deals", version="v2")  # 10
    await client.request("GET", "/deals/1", version="v2")  # 1
    await client.request("POST", "/deals", version="v2", json={"title": "b"})  # 5
    await client.request("GET", "/deals")  # 20
    await client.request("GET", "/deals/1")  # 2
    await client.add_channel(name="Chat", provider_channel_id="ch1")  # 10
    await client.delete_channel("ch1")  # 6
    assert [r.cost for r in fake.requests] == [10, 1, 5, 20, 2, 10, 6] and fake.tokens_spent == 54


async def test_failures_before_the_route_spend_nothing(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.rate_limit, fake.enforce_rate_limit = 1, True
    url = f"{v2(fake)}/persons"
    assert (await raw(http, "POST", url, json={"name": "Ada"}))[0] == 200
    assert (await raw(http, "POST", url, json={"name": "Ada"}))[0] == 429
    assert (await raw(http, "POST", url, json={"name": "Ada"}, headers={"Authorization": "Bearer no"}))[0] == 401
    fake.enforce_rate_limit = False
    fake.fail_next(1, 500)
    assert (await raw(http, "POST", url, json={"name": "Ada"}))[0] == 500
    assert fake.tokens_spent == 5 and [r.cost for r in fake.requests] == [5, 0, 0, 0]
    fake.tokens_spent = 0  # measure afresh
    assert (await raw(http, "GET", f"{url}/1"))[0] == 200
    assert fake.tokens_spent == 1


async def test_every_answer_carries_the_rate_headers(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    person = fake.add_person("Ada")
    for method, url, body in (
        ("POST", f"{v2(fake)}/persons", {"name": "Bob"}),
        ("GET", f"{v2(fake)}/persons/search?term=ada", None),
        ("GET", f"{v2(fake)}/persons/999", None),
        ("POST", f"{fake.base_url}/notes", {"content": "x", "person_id": person}),
        ("GET", f"{fake.base_url}/notes?person_id={person}", None),
        ("POST", f"{fake.base_url}/notes", {"content": ""}),
    ):
        async with http.request(method, url, json=body) as response:
            assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= response.headers.keys()


async def test_the_search_window_is_enforced_and_its_peak_kept(
    monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(_server, "monotonic", lambda: clock[0])  # only the fake's clock
    async with FakePipedrive(enforce_rate_limit=True) as fake:
        fake.add_access_token(TOKEN)
        url = f"{v2(fake)}/persons/search?term=ada"
        statuses = [(await raw(http, "GET", url))[0] for _ in range(11)]
        assert statuses == [200] * 10 + [429]
        async with http.get(url) as response:
            assert response.status == 429
            assert response.headers["x-ratelimit-limit"] == "80"  # the usual headers
            assert response.headers["x-ratelimit-reset"] == "2.000"  # when the search window frees a slot
        assert (await raw(http, "POST", f"{v2(fake)}/persons", json={"name": "Ada"}))[0] == 200  # no search
        clock[0] += 2.0
        assert (await raw(http, "GET", url))[0] == 200
        assert fake.search_window_peak == 12  # refused searches count, as Pipedrive counts every request
        assert fake.tokens_spent == 11 * 20 + 5


async def test_a_client_keeping_to_the_search_window_never_exceeds_it_at_the_server() -> None:
    async with FakePipedrive(enforce_rate_limit=True) as fake:
        fake.add_access_token(TOKEN)
        fake.add_person("Ada", phones=["555"])
        budget = RateBudget(requests_per_window=1_000)  # only the search window holds the client back
        async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=budget) as client:
            async def searches() -> None:
                await asyncio.gather(*(search(client, "555", fields="phone", exact_match="true") for _ in range(12)))

            await asyncio.wait_for(searches(), timeout=30)
        assert 1 <= fake.search_window_peak <= 10
        assert all(r.status == 200 for r in fake.requests)


async def test_a_fault_on_the_next_note_creation(fake: FakePipedrive, client: ChannelsClient) -> None:
    person = fake.add_person("Ada")
    reason = {"success": False, "error": "Content is too long", "additional_data": {"code": "ERR_CONTENT"}}
    fake.fail_next(1, 400, body=reason, path="/notes", method="POST")
    assert (await client.request("GET", "/notes")).status == 200  # another method: not counted
    with pytest.raises(BadRequestError, match="Content is too long") as refused:
        await add_note(client, person)
    assert refused.value.code == "ERR_CONTENT" and fake.notes == {}
    await add_note(client, person)  # the fault was for one request
    assert len(fake.notes) == 1


async def test_a_note_creation_dropped_or_failing_with_500(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    person = fake.add_person("Ada")
    url, body = f"{fake.base_url}/notes", {"content": "x", "person_id": person}
    fake.drop_next(1, path="/notes", method="post")
    with pytest.raises(aiohttp.ClientError):
        await raw(http, "POST", url, json=body)
    fake.fail_next(1, 500, path="/notes")
    status, answer = await raw(http, "POST", url, json=body)
    assert (status, answer["error"]) == (500, "Service unavailable")
    assert fake.notes == {} and [r.status for r in fake.requests] == [None, 500]

"""The fake's webhooks: the v1 registry, ``/users/me``, and the webhooks v2 it delivers to a real receiver."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from factories import TOKEN, wire_message

from pipedrive_channels.testing import FakePipedrive

GUARD = 30  # seconds: a hang guard, never a timing assertion
META_KEYS = {"action", "entity", "entity_id", "id", "company_id", "user_id", "correlation_id", "is_bulk_edit",
             "timestamp", "type", "version", "webhook_id", "webhook_owner_id", "change_source", "attempt", "host",
             "permitted_user_ids"}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.body["meta"]
        return meta


@dataclass
class Receiver:
    """A throwaway HTTP server on 127.0.0.1 recording what it receives; ``plan`` holds ``(status, delay)`` answers
    for the next requests (then 200 at once)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    plan: deque[tuple[int, float]] = field(default_factory=deque)
    release: asyncio.Event | None = None  # when set to an unset event, answers wait for it
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each request

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.headers), await request.json()))
        self.arrived.set()
        status, delay = self.plan.popleft() if self.plan else (200, 0.0)
        if self.release is not None:
            await self.release.wait()
        await asyncio.sleep(delay)
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": self.url + "/elsewhere"})
        return web.json_response({"ok": status < 300}, status=status)

    def on(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield recorder
    if recorder.release is not None:
        recorder.release.set()
    await runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakePipedrive]:
    """Retries after 0.03, 0.3 and 1.5 s; a generous 5 s timeout unless a test says otherwise."""
    async with FakePipedrive(webhook_delay_scale=0.01) as server:
        server.add_access_token(TOKEN)
        server.webhook_timeout = 5.0
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as response:
        return response.status, await response.json()


async def register(http: aiohttp.ClientSession, fake: FakePipedrive, url: str, **body: Any) -> dict[str, Any]:
    body = {"subscription_url": url, "event_action": "*", "event_object": "*", "name": "test", **body}
    status, answer = await call(http, "POST", fake.base_url + "/webhooks", body)
    assert status == 201, answer
    data: dict[str, Any] = answer["data"]
    return data


async def add_note(http: aiohttp.ClientSession, fake: FakePipedrive, person_id: int, content: str) -> int:
    status, answer = await call(http, "POST", fake.base_url + "/notes", {"content": content, "person_id": person_id})
    assert status == 200, answer
    return int(answer["data"]["id"])


async def idle(fake: FakePipedrive) -> None:
    await fake.webhooks_idle(timeout=GUARD)


def events(seen: list[Seen]) -> list[tuple[str, str]]:
    return [(s.meta["entity"], s.meta["action"]) for s in seen]


# -- the registry -------------------------------------------------------------------------------------------


async def test_a_webhook_is_registered_listed_without_its_password_and_deleted(
    fake: FakePipedrive, http: aiohttp.ClientSession
) -> None:
    hook = await register(http, fake, "https://bot.example/hooks", event_action="create", event_object="note",
                          name="Notes", http_auth_user="pd", http_auth_password="s3cret-pw")
    assert hook["subscription_url"] == "https://bot.example/hooks" and hook["version"] == "2.0"  # the default
    assert (hook["event_action"], hook["event_object"], hook["name"]) == ("create", "note", "Notes")
    assert hook["http_auth_user"] == "pd" and hook["http_auth_password"] is None
    assert hook["user_id"] == hook["owner_id"] == fake.user_id and hook["company_id"] == fake.company_id
    assert hook["is_active"] == 1 and hook["type"] == "general"
    datetime.fromisoformat(hook["add_time"].replace("Z", "+00:00"))

    status, listing = await call(http, "GET", fake.base_url + "/webhooks")
    assert status == 200 and listing["success"] is True and listing["data"] == [hook]
    assert "s3cret-pw" not in repr(listing) and "s3cret-pw" not in repr(dict(fake.webhooks))
    assert fake.webhooks[hook["id"]] == hook

    status, answer = await call(http, "DELETE", f"{fake.base_url}/webhooks/{hook['id']}")
    assert (status, answer) == (200, {"status": "ok", "success": True})
    assert (await call(http, "DELETE", f"{fake.base_url}/webhooks/{hook['id']}"))[0] == 404
    assert (await call(http, "GET", fake.root_url + "/api/v1/webhooks"))[1]["data"] == []


@pytest.mark.parametrize(("change", "field_name"), [
    ({"subscription_url": None}, "subscription_url"),
    ({"subscription_url": "ftp://bot.example/"}, "subscription_url"),
    ({"subscription_url": "https://"}, "subscription_url"),
    ({"subscription_url": "https://[bot.example/"}, "subscription_url"),
    ({"subscription_url": "https://x.example/" + "a" * 3000}, "subscription_url"),
    ({"event_action": "added"}, "event_action"),
    ({"event_action": None}, "event_action"),
    ({"event_object": "activityType"}, "event_object"),
    ({"event_object": ["note"]}, "event_object"),
    ({"name": None}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "n" * 256}, "name"),
    ({"version": "3.0"}, "version"),
    ({"version": 2}, "version"),
    ({"user_id": "1"}, "user_id"),
    ({"user_id": 0}, "user_id"),
    ({"http_auth_user": 5}, "http_auth_user"),
    ({"http_auth_user": "a:b"}, "http_auth_user"),
    ({"http_auth_password": "line\nbreak"}, "http_auth_password"),
])
async def test_a_bad_registration_is_refused_naming_the_field(
    fake: FakePipedrive, http: aiohttp.ClientSession, change: dict[str, Any], field_name: str
) -> None:
    body = {"subscription_url": "https://bot.example/", "event_action": "*", "event_object": "*", "name": "n"}
    body.update(change)
    sent = {key: value for key, value in body.items() if value is not None}
    status, answer = await call(http, "POST", fake.base_url + "/webhooks", sent)
    assert status == 400 and answer["success"] is False and answer["status"] == "error"
    assert list(answer["errors"]) == [field_name] and answer["error"].startswith(field_name)
    assert fake.webhooks == {}


async def test_a_registration_that_is_no_object_is_refused(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    status, answer = await call(http, "POST", fake.base_url + "/webhooks", ["subscription_url"])
    assert status == 400 and list(answer["errors"]) == ["body"]


async def test_a_user_holds_at_most_40_webhooks(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    for index in range(40):
        await register(http, fake, f"https://bot.example/{index}")
    status, answer = await call(http, "POST", fake.base_url + "/webhooks", {
        "subscription_url": "https://bot.example/41", "event_action": "*", "event_object": "*", "name": "n"})
    assert status == 400 and list(answer["errors"]) == ["user_id"]
    other = await register(http, fake, "https://bot.example/other-user", user_id=fake.user_id + 10)
    assert other["user_id"] == fake.user_id + 10 and len(fake.webhooks) == 41


async def test_users_me_is_the_tokens_user(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.user_id, fake.company_id = 4242, 99
    status, answer = await call(http, "GET", fake.base_url + "/users/me")
    assert status == 200 and answer["success"] is True
    assert answer["data"]["id"] == 4242 and answer["data"]["company_id"] == 99 and answer["data"]["is_you"] is True
    assert isinstance(answer["data"]["name"], str) and answer["data"]["name"]


async def test_the_webhook_routes_spend_their_documented_costs(
    fake: FakePipedrive, http: aiohttp.ClientSession
) -> None:
    hook = await register(http, fake, "https://bot.example/")
    await call(http, "GET", fake.base_url + "/webhooks")
    await call(http, "DELETE", f"{fake.base_url}/webhooks/{hook['id']}")
    await call(http, "GET", fake.base_url + "/users/me")
    assert [record.cost for record in fake.requests] == [10, 10, 6, 2] and fake.tokens_spent == 28
    await call(http, "POST", fake.base_url + "/webhooks", {})  # refused: charged all the same
    assert fake.tokens_spent == 38


# -- deliveries ---------------------------------------------------------------------------------------------


async def test_a_note_written_through_the_api_is_delivered_with_the_credentials(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hook = await register(http, fake, receiver.url + "/hook", event_object="note", event_action="*",
                          http_auth_user="pd", http_auth_password="pä:ss")
    ada = fake.add_person("Ada")  # a person: no note webhook hears it
    note_id = await add_note(http, fake, ada, "<p>Hello</p>")
    await idle(fake)

    (seen,) = receiver.seen
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode("pd:pä:ss".encode()).decode()
    assert seen.headers["Content-Type"].startswith("application/json")
    assert set(seen.body) == {"meta", "data", "previous"} and seen.body["previous"] is None
    meta = seen.meta
    assert set(meta) == META_KEYS
    assert (meta["action"], meta["entity"], meta["entity_id"]) == ("create", "note", str(note_id))
    assert meta["change_source"] == "api" and meta["user_id"] == str(fake.user_id)
    assert meta["company_id"] == str(fake.company_id) and meta["webhook_id"] == str(hook["id"])
    assert meta["webhook_owner_id"] == str(fake.user_id) and meta["permitted_user_ids"] == [str(fake.user_id)]
    assert (meta["type"], meta["version"], meta["attempt"], meta["is_bulk_edit"]) == ("general", "2.0", 1, False)
    uuid.UUID(meta["id"]) and uuid.UUID(meta["correlation_id"])
    assert meta["timestamp"].endswith("Z") and datetime.fromisoformat(meta["timestamp"][:-1] + "+00:00")
    assert seen.body["data"] == (await call(http, "GET", f"{fake.base_url}/notes/{note_id}"))[1]["data"]
    assert seen.body["data"]["user_id"] == fake.user_id

    (record,) = fake.webhook_deliveries
    assert (record.webhook_id, record.event_id, record.attempt, record.status) == (hook["id"], meta["id"], 1, 200)
    assert fake.webhooks[hook["id"]]["last_http_status"] == 200


async def test_events_go_to_the_webhooks_matching_their_object_and_action(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    for path, action, target in (("/note-create", "create", "note"), ("/note-any", "*", "note"),
                                 ("/any-delete", "delete", "*"), ("/person-change", "change", "person"),
                                 ("/all", "*", "*")):
        await register(http, fake, receiver.url + path, event_action=action, event_object=target)
    await register(http, fake, receiver.url + "/v1", version="1.0")  # the fake delivers v2 only
    ada = fake.add_person("Ada")
    note_id = await add_note(http, fake, ada, "first")
    await call(http, "PUT", f"{fake.base_url}/notes/{note_id}", {"content": "second"})
    await call(http, "DELETE", f"{fake.base_url}/notes/{note_id}")
    await call(http, "PATCH", f"{fake.root_url}/api/v2/persons/{ada}", {"name": "Ada King"})
    await call(http, "DELETE", f"{fake.root_url}/api/v2/persons/{ada}")
    await idle(fake)

    assert events(receiver.on("/note-create")) == [("note", "create")]
    assert events(receiver.on("/note-any")) == [("note", "create"), ("note", "change"), ("note", "delete")]
    assert events(receiver.on("/any-delete")) == [("note", "delete"), ("person", "delete")]
    assert events(receiver.on("/person-change")) == [("person", "change")]
    assert events(receiver.on("/all")) == [("person", "create"), ("note", "create"), ("note", "change"),
                                           ("note", "delete"), ("person", "change"), ("person", "delete")]
    assert receiver.on("/v1") == []
    # One event, one id, whichever webhooks hear it.
    assert receiver.on("/note-create")[0].meta["id"] == receiver.on("/all")[1].meta["id"]


async def test_previous_holds_the_old_values_of_the_changed_fields_only(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url)
    ada = fake.add_person("Ada Lovelace", emails=["ada@example.com"])
    note_id = await add_note(http, fake, ada, "first")
    await call(http, "PUT", f"{fake.base_url}/notes/{note_id}", {"content": "second"})
    await call(http, "PUT", f"{fake.base_url}/notes/{note_id}", {"content": "second"})  # no change: no event
    await call(http, "PATCH", f"{fake.root_url}/api/v2/persons/{ada}", {"name": "Ada King"})
    await call(http, "DELETE", f"{fake.base_url}/notes/{note_id}")
    await idle(fake)

    person_create, note_create, note_change, person_change, note_delete = receiver.seen
    assert person_create.body["previous"] is None and person_create.body["data"]["name"] == "Ada Lovelace"
    assert person_create.meta["change_source"] == "app"  # a knob: the fake's user in the app
    assert note_change.body["previous"] == {"content": "first"} and note_change.body["data"]["content"] == "second"
    assert person_change.body["previous"] == {"name": "Ada Lovelace", "last_name": "Lovelace"}
    assert person_change.body["data"]["name"] == "Ada King"
    assert person_change.body["data"] == (await call(http, "GET", f"{fake.root_url}/api/v2/persons/{ada}"))[1]["data"]
    assert note_delete.body["data"] is None and note_delete.body["previous"]["content"] == "second"
    assert note_delete.body["previous"]["id"] == note_id and note_create.body["data"]["content"] == "first"


async def test_an_agent_in_the_app_writes_notes_as_another_user(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url, event_object="note")
    ada = fake.add_person("Ada")
    note_id = fake.agent_adds_note(ada, "Reply: hello")
    fake.agent_updates_note(note_id, "Reply: hello again", user_id=77)
    fake.agent_deletes_note(note_id)
    with pytest.raises(ValueError, match="person_id"):
        fake.agent_adds_note(ada + 100, "nobody's")
    with pytest.raises(ValueError, match="Note not found"):
        fake.agent_updates_note(note_id, "deleted already")
    await idle(fake)

    create, change, delete = receiver.seen
    assert [s.meta["change_source"] for s in receiver.seen] == ["app"] * 3
    assert [s.meta["user_id"] for s in receiver.seen] == [str(fake.agent_user_id), "77", str(fake.agent_user_id)]
    assert create.body["data"]["content"] == "Reply: hello" and create.body["data"]["user_id"] == fake.agent_user_id
    assert change.body["previous"] == {"content": "Reply: hello"}
    assert change.body["data"]["last_update_user_id"] == 77
    assert delete.body["data"] is None and delete.meta["entity_id"] == str(note_id)
    assert fake.notes == {}


async def test_channels_and_messages_are_delivered_to_wildcard_webhooks(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url + "/all")
    await register(http, fake, receiver.url + "/notes", event_object="note")
    await call(http, "POST", fake.base_url + "/channels", {"name": "Chat", "provider_channel_id": "ch"})
    await call(http, "POST", fake.base_url + "/channels", {"name": "Chat 2", "provider_channel_id": "ch"})
    await call(http, "POST", fake.base_url + "/channels/messages/receive", wire_message(1))
    await call(http, "POST", fake.base_url + "/channels/messages/receive", wire_message(1, status="read"))
    await call(http, "DELETE", fake.base_url + "/channels/ch/conversations/c-1")
    await call(http, "DELETE", fake.base_url + "/channels/ch")
    await idle(fake)

    assert receiver.on("/notes") == []
    seen = receiver.on("/all")
    assert events(seen) == [("channel", "create"), ("channel", "change"), ("message", "create"),
                            ("message", "change"), ("message", "delete"), ("channel", "delete")]
    assert [s.meta["entity_id"] for s in seen] == ["ch", "ch", "m-1", "m-1", "m-1", "ch"]
    assert seen[1].body["previous"] == {"name": "Chat"} and seen[3].body["previous"] == {"status": "sent"}
    assert seen[5].body["previous"]["name"] == "Chat 2" and seen[5].body["data"] is None


# -- failures and retries -----------------------------------------------------------------------------------


async def test_a_failed_delivery_is_retried_with_the_same_event_id_and_a_counted_attempt(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hook = await register(http, fake, receiver.url)
    receiver.plan.extend([(500, 0.0), (503, 0.0)])
    fake.add_person("Ada")
    await idle(fake)

    assert [s.meta["attempt"] for s in receiver.seen] == [1, 2, 3]
    assert len({s.meta["id"] for s in receiver.seen}) == 1
    assert len({s.meta["timestamp"] for s in receiver.seen}) == 1
    assert [(r.attempt, r.status) for r in fake.webhook_deliveries] == [(1, 500), (2, 503), (3, 200)]
    assert fake.webhooks[hook["id"]]["last_http_status"] == 200


async def test_a_delivery_failing_every_time_is_given_up_after_three_retries(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url)
    receiver.plan.extend([(500, 0.0)] * 4)
    ada = fake.add_person("Ada")
    await idle(fake)
    assert [s.meta["attempt"] for s in receiver.seen] == [1, 2, 3, 4]
    fake.delete_person(ada)  # the next event is delivered as usual
    await idle(fake)
    assert events(receiver.seen[4:]) == [("person", "delete")] and receiver.seen[4].meta["attempt"] == 1


async def test_a_slow_answer_fails_the_attempt_and_is_retried(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    fake.webhook_timeout = 0.2
    await register(http, fake, receiver.url)
    receiver.plan.append((200, 3.0))
    fake.add_person("Ada")
    await idle(fake)
    assert [(r.attempt, r.status, r.error) for r in fake.webhook_deliveries] == [(1, None, "timeout"), (2, 200, None)]
    assert [s.meta["attempt"] for s in receiver.seen] == [1, 2]


async def test_a_redirect_is_a_failure_never_followed(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url + "/hook")
    receiver.plan.append((302, 0.0))
    fake.add_person("Ada")
    await idle(fake)
    assert [s.path for s in receiver.seen] == ["/hook", "/hook"]
    assert [r.status for r in fake.webhook_deliveries] == [302, 200]


async def test_an_unreachable_receiver_is_recorded_as_an_error(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, "http://127.0.0.1:9/nobody")  # the discard port: nothing listens
    fake.add_person("Ada")
    await idle(fake)
    assert [r.attempt for r in fake.webhook_deliveries] == [1, 2, 3, 4]
    assert all(r.status is None and r.error for r in fake.webhook_deliveries)


async def test_deliveries_never_delay_the_api_answer(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    fake.webhook_timeout = GUARD
    receiver.release = asyncio.Event()  # the receiver answers nothing until released
    await register(http, fake, receiver.url)
    ada = fake.add_person("Ada")
    await asyncio.wait_for(add_note(http, fake, ada, "quick"), GUARD)  # answered while the person's event hangs
    receiver.release.set()
    await idle(fake)
    assert events(receiver.seen) == [("person", "create"), ("note", "create")]


async def test_each_webhook_gets_its_events_in_order_even_through_retries(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await register(http, fake, receiver.url + "/a")
    await register(http, fake, receiver.url + "/b")
    receiver.plan.append((500, 0.0))  # the first request of all fails
    ids = [fake.add_person(f"P{index}") for index in range(5)]
    await idle(fake)
    for path in ("/a", "/b"):
        delivered = [s.meta["entity_id"] for s in receiver.on(path) if s.path == path]
        assert list(dict.fromkeys(delivered)) == [str(person) for person in ids]


async def test_no_delivery_once_the_webhook_is_deleted(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    hook = await register(http, fake, receiver.url)
    receiver.plan.extend([(500, 0.0)] * 4)
    fake.webhook_delay_scale = 1.0  # the retry waits 3 s: the webhook is deleted meanwhile
    fake.add_person("Ada")
    await asyncio.wait_for(receiver.arrived.wait(), GUARD)
    fake.delete_webhook(hook["id"])
    await idle(fake)
    fake.add_person("Bob")
    await idle(fake)
    assert len(receiver.seen) == 1 and len(fake.webhook_deliveries) <= 1  # the first attempt, maybe recorded
    with pytest.raises(KeyError):
        fake.delete_webhook(hook["id"])


async def test_ten_first_attempt_failures_ban_the_webhook_and_lose_its_events(
    http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with FakePipedrive(webhook_delay_scale=0.001) as fake:  # a ban of 1.8 s
        fake.add_access_token(TOKEN)
        fake.webhook_timeout = 5.0
        hook = await register(http, fake, receiver.url)
        receiver.plan.extend([(500, 0.0)] * 100)
        for index in range(12):
            fake.add_person(f"P{index}")
        await idle(fake)
        firsts = [r for r in fake.webhook_deliveries if r.attempt == 1]
        lost = [r for r in fake.webhook_deliveries if r.attempt == 0]
        assert len(firsts) == 10 and [r.error for r in lost] == ["banned", "banned"]
        assert all(r.webhook_id == hook["id"] for r in lost)
        assert len(receiver.seen) == 9 * 4 + 1  # the tenth event's retries are lost with the ban


async def test_closing_the_fake_stops_its_deliveries(http: aiohttp.ClientSession, receiver: Receiver) -> None:
    receiver.release = asyncio.Event()
    fake = FakePipedrive()
    await fake.start()
    fake.add_access_token(TOKEN)
    await register(http, fake, receiver.url)
    fake.add_person("Ada")
    await asyncio.wait_for(receiver.arrived.wait(), GUARD)
    await asyncio.wait_for(fake.close(), GUARD)
    await fake.webhooks_idle(timeout=1)


async def test_an_agent_merging_persons_tells_a_delete_and_a_change(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    ada = fake.add_person("Ada", emails=["ada@example.com"])
    king = fake.add_person("Ada King", emails=["ada@example.com", "king@example.com"], phones=["+44 1"])
    note_id = await add_note(http, fake, king, "from the duplicate")
    await register(http, fake, receiver.url, event_object="person")
    fake.agent_merges_persons(king, ada)
    with pytest.raises(ValueError, match="Person not found"):
        fake.agent_merges_persons(king, ada)
    with pytest.raises(ValueError, match="another person"):
        fake.agent_merges_persons(ada, ada)
    await idle(fake)

    delete, change = receiver.seen
    assert (delete.meta["action"], delete.meta["entity_id"], delete.meta["merged_to_id"]) == ("delete", str(king),
                                                                                             str(ada))
    assert delete.body["data"] is None and delete.body["previous"]["name"] == "Ada King"
    assert (change.meta["action"], change.meta["entity_id"], change.meta["merged_from_id"]) == ("change", str(ada),
                                                                                               str(king))
    assert "merged_from_id" not in delete.meta and "merged_to_id" not in change.meta
    assert change.meta["change_source"] == "app" and change.meta["user_id"] == str(fake.agent_user_id)
    assert set(change.body["previous"]) == {"emails", "phones"}
    assert [entry["value"] for entry in change.body["data"]["emails"]] == ["ada@example.com", "king@example.com"]
    assert king not in fake.persons and fake.notes[note_id]["person_id"] == ada


async def test_a_webhook_holds_at_most_1000_pending_events_and_loses_the_rest(
    fake: FakePipedrive, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    fake.webhook_timeout = GUARD
    receiver.release = asyncio.Event()  # the first delivery hangs: every later event waits
    hook = await register(http, fake, receiver.url)
    for index in range(1002):
        fake.add_person(f"P{index}")
    lost = [record for record in fake.webhook_deliveries if record.attempt == 0]
    assert [(r.webhook_id, r.error) for r in lost] == [(hook["id"], "queue full")] * 2
    fake.delete_webhook(hook["id"])  # drops the 1,000 waiting
    await idle(fake)
    with pytest.raises(TypeError):
        fake.webhooks[hook["id"]] = {}  # type: ignore[index]

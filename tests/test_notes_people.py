"""Resolving a conversation's contact to a Pipedrive person: once per contact, single-flight, crash-safe, and
answers of odd shapes refused by name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from notes_mock import MockPipedrive
from test_notes_target import PHONE, Outcome, attached, msg

from pipedrive_channels import ChannelsClient
from pipedrive_channels._journal import Checkpoint
from pipedrive_channels.errors import ValidationError
from pipedrive_channels.notes import Contact, NotesTarget
from pipedrive_channels.notes._keyed import KeyedLock
from pipedrive_channels.notes._people import contact_key


async def test_conversations_sharing_a_contact_search_and_create_once(pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget()
    attached(target)
    for index in range(20):  # written concurrently at the flush: one resolution, the others wait for it
        await target.deliver(api, msg(index, conversation=f"c-{index}"), contact=Contact(phone=PHONE))
    await target.flush()
    assert pd.count("GET", "/api/v2/persons/search") == 1 and pd.count("POST", "/api/v2/persons") == 1
    assert len(pd.notes) == 20 and len({note["person_id"] for note in pd.notes.values()}) == 1


async def test_the_phone_is_searched_before_the_email(pd: MockPipedrive, api: ChannelsClient) -> None:
    by_email = pd.add_person("E", email="e@example.com")
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE, email="e@example.com"))
    await target.flush()
    assert pd.count("GET", "/api/v2/persons/search") == 2 and pd.count("POST", "/api/v2/persons") == 0
    (note,) = pd.notes.values()
    assert note["person_id"] == by_email and target.counts()["persons_found"] == 1


async def test_a_contact_with_only_a_name_is_created_by_that_name_without_a_search(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1), contact=Contact(name="Only Name"))
    await target.flush()
    assert pd.calls[0] == ("POST", "/api/v2/persons")
    (person,) = pd.persons.values()
    assert person["name"] == "Only Name"


async def test_a_person_whose_creation_was_not_journalled_is_found_not_created_again(
        pd: MockPipedrive, api: ChannelsClient, tmp_path: Path) -> None:
    # The crash: POST /persons happened (the person exists), its id was never journalled (the mark stays).
    existing = pd.add_person(PHONE, PHONE)
    named = pd.add_person("Only Name")
    with Checkpoint(tmp_path / "run.db") as journal:
        target = NotesTarget()
        attached(target, journal)
        for key in (contact_key(Contact(phone=PHONE)), contact_key(Contact(name="Only Name"))):
            journal.execute("INSERT INTO notes_persons VALUES (?, NULL)", (key,))
        await target.deliver(api, msg(1, conversation="c-1"), contact=Contact(phone=PHONE))
        await target.deliver(api, msg(2, conversation="c-2"), contact=Contact(name="Only Name"))
        await target.flush()
    assert pd.count("POST", "/api/v2/persons") == 0
    assert {note["person_id"] for note in pd.notes.values()} == {existing, named}


@pytest.mark.parametrize(("answer", "field"), [
    ({"success": True, "data": "nothing"}, "data is"),
    ({"success": True, "data": {"items": {"item": 1}}}, "data.items is"),
    ({"success": True, "data": {"items": [{"item": {"name": "no id"}}]}}, "data.items[0].item.id"),
    ({"success": True, "data": {"items": [{"item": {"id": True}}]}}, "data.items[0].item.id"),
    ({"success": True, "data": {"items": ["odd"]}}, "data.items[0].item"),
])
async def test_a_search_answer_of_an_odd_shape_fails_the_conversation_naming_the_field(
        pd: MockPipedrive, api: ChannelsClient, answer: dict[str, Any], field: str) -> None:
    pd.fail.append(("GET", "/api/v2/persons/search", 200, answer))
    target = NotesTarget()
    outcome: Outcome = attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    ((message_id, reason, records),) = outcome.failures
    assert message_id == "m-1" and records == 1 and field in reason and not pd.notes


async def test_the_first_contact_of_a_conversation_wins_and_a_huge_one_is_refused(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    first = pd.add_person("First", PHONE)
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.deliver(api, msg(2), contact=Contact(phone="+3725559999"))  # later contacts are ignored
    with pytest.raises(ValidationError, match="name: must be at most 255 characters"):  # refused before it is sent
        await target.deliver(api, msg(3, conversation="c-2"), contact=Contact(name="x" * 5000))
    await target.flush()
    assert [note["person_id"] for note in pd.notes.values()] == [first]
    assert pd.count("GET", "/api/v2/persons/search") == 1


async def test_single_flight_keeps_no_lock_once_free() -> None:
    locks = KeyedLock()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with locks.hold("key"):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"), hold("c"))
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"] and locks._held == {}

"""End to end: the example echo bot served by ``create_app``, pushing its replies into ``FakePipedrive``."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipedrive_channels import ChannelsClient, RateBudget
from pipedrive_channels.extension import create_app, manifest
from pipedrive_channels.extension.echo_bot import EchoBot, main
from pipedrive_channels.testing import FakePipedrive

AUTH = {"Authorization": "Basic " + base64.b64encode(b"bot-id:bot-secret").decode()}


async def test_a_posted_message_comes_back_as_status_updates_and_an_echo_in_pipedrive() -> None:
    async with FakePipedrive() as fake:
        fake.add_access_token("t")
        async with ChannelsClient("t", base_url=fake.base_url, budget=RateBudget.unlimited()) as client:
            await client.add_channel(name="Echo", provider_channel_id="ch1")
            bot = EchoBot(client)
            app = create_app(bot, client_id="bot-id", client_secret="bot-secret")
            async with TestClient(TestServer(app)) as http:
                form = aiohttp.FormData({"message": "ping", "senderId": "agent-1", "conversationId": "conv-1",
                                         "recipientIds": "alice"})
                form.add_field("files", b"%PDF", filename="doc.pdf", content_type="application/pdf")
                response = await http.post("/pipedrive/channels/ch1/messages", data=form, headers=AUTH)
                assert response.status == 200
                message_id = (await response.json())["data"]["id"]
                await bot.wait_idle()

                # As Pipedrive would next: the conversation now holds the agent's message and the echo.
                response = await http.get("/pipedrive/channels/ch1/conversations/conv-1", headers=AUTH)
                conversation = (await response.json())["data"]
                assert [m["sender_id"] for m in conversation["messages"]] == ["alice", "agent-1"]
                assert {p["role"] for p in conversation["participants"]} == {"source_user", "end_user"}

    receives = [r.json for r in fake.requests if r.path.endswith("/channels/messages/receive")]
    assert all(r.status == 200 for r in fake.requests)
    assert [(m["id"], m["status"]) for m in receives[:3]] == [
        (message_id, "sent"), (message_id, "delivered"), (message_id, "read")
    ]
    (reply,) = receives[3:]
    assert reply["id"] != message_id
    assert (reply["channel_id"], reply["conversation_id"], reply["sender_id"]) == ("ch1", "conv-1", "alice")
    assert reply["message"] == "Echo: ping [files: doc.pdf]"
    stored = fake.messages[("ch1", "conv-1")]
    assert stored[message_id]["status"] == "read"
    assert stored[reply["id"]]["message"] == "Echo: ping [files: doc.pdf]"


async def test_an_unknown_conversation_is_a_404_and_the_manifest_has_the_required_endpoints() -> None:
    async with ChannelsClient("t", base_url="http://127.0.0.1:9/v1", budget=RateBudget.unlimited()) as client:
        app: web.Application = create_app(EchoBot(client), client_id="bot-id", client_secret="bot-secret")
        async with TestClient(TestServer(app)) as http:
            response = await http.get("/pipedrive/channels/ch1/conversations/nope", headers=AUTH)
            assert response.status == 404
            response = await http.get("/pipedrive/channels/ch1/conversations", headers=AUTH)
            assert (await response.json()) == {"success": True, "data": [], "additional_data": {}}
    assert set(manifest("https://bot.example.com", EchoBot)["endpoints"]) == {
        "getConversations", "getConversationById", "postMessage"
    }


def test_the_bot_needs_its_credentials(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("PIPEDRIVE_CLIENT_ID", "PIPEDRIVE_CLIENT_SECRET", "PIPEDRIVE_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "0"])
    assert stopped.value.code == 2
    assert "PIPEDRIVE_CLIENT_SECRET" in capsys.readouterr().err

"""The extension's manifest: the endpoints a provider implements, as the app serves them and the CLI prints them."""

from __future__ import annotations

import json

import pytest
from extension_shop import AUTH, BASE, ROUTES, Minimal, Shop, serve
from omnichannel_spec import assert_error_shape

from pipedrive_channels import cli
from pipedrive_channels.extension import manifest


def test_the_manifest_lists_every_endpoint_a_full_provider_implements() -> None:
    document = manifest("https://bot.example.com/", Shop(), prefix="/hooks/pd/")
    root = "https://bot.example.com/hooks/pd/channels/:providerChannelId"
    assert document == {
        "version": "v202101",
        "endpoints": {
            "getConversations": f"{root}/conversations",
            "getConversationById": f"{root}/conversations/:sourceConversationId",
            "postMessage": f"{root}/messages",
            "getMessageById": f"{root}/conversations/:sourceConversationId/messages/:sourceMessageId",
            "getSenderById": f"{root}/senders/:senderId",
            "getTemplates": f"{root}/templates",
            "deleteChannelById": root,
        },
    }


async def test_the_manifest_and_the_app_hold_exactly_the_implemented_endpoints() -> None:
    assert set(manifest("https://bot.example.com", Minimal)["endpoints"]) == {
        "getConversations", "getConversationById", "postMessage"
    }
    http = await serve(Minimal())
    try:
        for method, path in ROUTES[5:]:
            response = await http.request(method, path, headers=AUTH)
            assert response.status in (404, 405), path
            assert_error_shape(await response.json(), "NOT_FOUND" if response.status == 404 else "BAD_REQUEST")
        assert (await http.get(f"{BASE}/conversations", headers=AUTH)).status == 200
    finally:
        await http.close()


def test_the_manifest_command_prints_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(["manifest", "--base-url", "https://bot.example.com", "--provider", "extension_shop:Minimal",
                    "--prefix", "/x"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == manifest("https://bot.example.com", Minimal, "/x")
    assert cli.run(["manifest", "--base-url", "https://b.example.com", "--provider", "json:loads"]) == 2
    assert cli.run(["manifest", "--base-url", "ftp://b.example.com", "--provider", "extension_shop:Minimal"]) == 2

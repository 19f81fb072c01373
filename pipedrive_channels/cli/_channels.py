"""``add-channel``, ``delete-channel`` and ``delete-conversation``: one API call each, its result on stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable

from ..client import ChannelsClient
from ..errors import PipedriveError, ValidationError
from ..models import ProviderType, converter
from ._common import EXIT_FAILED, EXIT_OK, UsageError, to_stderr
from ._credentials import credentials, make_client


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser) -> None:
    """Add the channel and conversation commands; ``api`` holds the credentials options."""
    add = commands.add_parser("add-channel", parents=[api], help="register a channel; prints it as JSON")
    add.add_argument("--provider-channel-id", required=True, metavar="ID", help="the provider's own channel id")
    add.add_argument("--name", required=True, help="the channel's name in Pipedrive")
    add.add_argument("--avatar-url", metavar="URL")
    add.add_argument("--provider-type", choices=[t.value for t in ProviderType], default=ProviderType.OTHER.value)
    add.add_argument("--template-support", action="store_true")
    add.set_defaults(handler=_add_channel)

    delete_channel = commands.add_parser("delete-channel", parents=[api], help="delete a channel and its messages")
    delete_channel.add_argument("channel_id", metavar="ID", help="the provider_channel_id")
    delete_channel.set_defaults(handler=_delete_channel)

    delete_conversation = commands.add_parser(
        "delete-conversation", parents=[api], help="delete one conversation and its messages"
    )
    delete_conversation.add_argument("channel_id", metavar="CHANNEL_ID", help="the provider_channel_id")
    delete_conversation.add_argument("conversation_id", metavar="CONVERSATION_ID")
    delete_conversation.set_defaults(handler=_delete_conversation)


def _api_command(args: argparse.Namespace, call: Callable[[ChannelsClient], Awaitable[None]]) -> int:
    async def go() -> int:
        client = make_client(args, await credentials(args), None)
        try:
            async with client:
                await call(client)
        except ValidationError as error:  # raised before anything was sent: a bad argument
            raise UsageError(str(error)) from None
        except PipedriveError as error:
            to_stderr(f"error: {error}")
            return EXIT_FAILED
        return EXIT_OK

    return asyncio.run(go())


def _add_channel(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        channel = await client.add_channel(
            name=args.name,
            provider_channel_id=args.provider_channel_id,
            avatar_url=args.avatar_url,
            template_support=args.template_support,
            provider_type=args.provider_type,
        )
        print(json.dumps(converter.unstructure(channel), indent=2, default=str))

    return _api_command(args, call)


def _delete_channel(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        await client.delete_channel(args.channel_id)
        print(f"channel {args.channel_id} deleted")

    return _api_command(args, call)


def _delete_conversation(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        await client.delete_conversation(args.channel_id, args.conversation_id)
        print(f"conversation {args.conversation_id} of channel {args.channel_id} deleted")

    return _api_command(args, call)

"""The other half of a messaging integration: the endpoints Pipedrive calls, served from aiohttp.

Subclass :class:`ChannelProvider`, serve it with :func:`create_app`, and upload :func:`manifest`'s JSON to the
app's Developer Hub page::

    class MyProvider(ChannelProvider):
        async def get_conversations(self, channel_id, limit, messages_limit, after): ...
        async def get_conversation(self, channel_id, conversation_id, messages_limit, after): ...
        async def post_message(self, channel_id, outgoing): ...

    app = create_app(MyProvider(), client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    print(json.dumps(manifest("https://bot.example.com", MyProvider)))

:mod:`pipedrive_channels.extension.echo_bot` is a complete example.
"""

from .app import DEFAULT_LIMIT, MAX_FORM_PARTS, MAX_LIMIT, PROVIDER_KEY, create_app
from .manifest import ENDPOINTS, MANIFEST_VERSION, UNINSTALL_PATH, Endpoint, manifest
from .models import (
    Conversation,
    ConversationStatus,
    ExtensionMessage,
    FilePart,
    OutgoingMessage,
    Page,
    Participant,
    ParticipantRole,
    Sender,
    Template,
    UninstallEvent,
)
from .provider import ChannelProvider, ErrorCode, ProviderError

__all__ = [
    "DEFAULT_LIMIT",
    "ENDPOINTS",
    "MANIFEST_VERSION",
    "MAX_FORM_PARTS",
    "MAX_LIMIT",
    "PROVIDER_KEY",
    "UNINSTALL_PATH",
    "ChannelProvider",
    "Conversation",
    "ConversationStatus",
    "Endpoint",
    "ErrorCode",
    "ExtensionMessage",
    "FilePart",
    "OutgoingMessage",
    "Page",
    "Participant",
    "ParticipantRole",
    "ProviderError",
    "Sender",
    "Template",
    "UninstallEvent",
    "create_app",
    "manifest",
]

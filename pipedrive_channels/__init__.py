"""Asyncio SDK for Pipedrive's Channels API.

Typed endpoint methods over an OAuth session that refreshes tokens once however many calls wait,
and a fake Pipedrive server (:mod:`pipedrive_channels.testing`) to test against without an account.
"""

from .auth import ApiToken, JsonFileTokenStore, MemoryTokenStore, OAuthApp, OAuthToken, TokenStore
from .client import ChannelsClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    GoneError,
    NotFoundError,
    PaymentRequiredError,
    PipedriveError,
    RateLimitError,
    ServerError,
    TransportError,
    UnprocessableError,
    ValidationError,
)
from .models import Attachment, Channel, Message, MessageStatus, ProviderType

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "ApiToken",
    "Attachment",
    "AuthenticationError",
    "BadRequestError",
    "Channel",
    "ChannelsClient",
    "ForbiddenError",
    "GoneError",
    "JsonFileTokenStore",
    "MemoryTokenStore",
    "Message",
    "MessageStatus",
    "NotFoundError",
    "OAuthApp",
    "OAuthToken",
    "PaymentRequiredError",
    "PipedriveError",
    "ProviderType",
    "RateLimitError",
    "ServerError",
    "TokenStore",
    "TransportError",
    "UnprocessableError",
    "ValidationError",
    "__version__",
]

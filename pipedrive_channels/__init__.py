"""Asyncio SDK for Pipedrive's Channels API.

Typed endpoint methods over an OAuth session that refreshes tokens once however many calls wait, a rate
budget that charges every call its documented cost before it is sent, and a fake Pipedrive server
(:mod:`pipedrive_channels.testing`) to test against without an account.
"""

from .auth import ApiToken, JsonFileTokenStore, MemoryTokenStore, OAuthApp, OAuthToken, TokenStore
from .budget import BudgetStats, Plan, Priority, RateBudget, Reservation, TokenBucket
from .client import ChannelsClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    BudgetExhaustedError,
    BudgetTimeoutError,
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
from .retry import Repeat, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "ApiToken",
    "Attachment",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhaustedError",
    "BudgetStats",
    "BudgetTimeoutError",
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
    "Plan",
    "Priority",
    "ProviderType",
    "RateBudget",
    "RateLimitError",
    "Repeat",
    "Reservation",
    "RetryPolicy",
    "ServerError",
    "TokenBucket",
    "TokenStore",
    "TransportError",
    "UnprocessableError",
    "ValidationError",
    "__version__",
]

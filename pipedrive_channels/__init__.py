"""Asyncio SDK for Pipedrive's Channels API.

Typed endpoint methods over an OAuth session that refreshes tokens once however many calls wait, a rate
budget that charges every call its documented cost before it is sent, a resumable bulk back-fill
(:mod:`pipedrive_channels.backfill`), and a fake Pipedrive server (:mod:`pipedrive_channels.testing`) to test
against without an account.
"""

from importlib.metadata import PackageNotFoundError, version

from .auth import ApiToken, JsonFileTokenStore, MemoryTokenStore, OAuthApp, OAuthToken, TokenStore
from .backfill import (
    BackfillReport,
    BadInput,
    Checkpoint,
    CheckpointError,
    CheckpointLockedError,
    Failure,
    Progress,
    WithContact,
    estimate,
    read_jsonl,
)
from .budget import Admission, Budget, BudgetStats, Limits, Plan, Priority, RateBudget, Reservation, TokenBucket
from .client import ChannelsClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    BudgetExhaustedError,
    BudgetTimeoutError,
    BudgetUnavailableError,
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
from .models import ApiResponse, Attachment, Channel, Message, MessageStatus, ProviderType
from .retry import Repeat, RetryPolicy

try:
    __version__ = version("pipedrive-channels")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Admission",
    "ApiError",
    "ApiResponse",
    "ApiToken",
    "Attachment",
    "AuthenticationError",
    "BackfillReport",
    "BadInput",
    "BadRequestError",
    "Budget",
    "BudgetExhaustedError",
    "BudgetStats",
    "BudgetTimeoutError",
    "BudgetUnavailableError",
    "Channel",
    "ChannelsClient",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLockedError",
    "Failure",
    "ForbiddenError",
    "GoneError",
    "JsonFileTokenStore",
    "Limits",
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
    "Progress",
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
    "WithContact",
    "__version__",
    "estimate",
    "read_jsonl",
]

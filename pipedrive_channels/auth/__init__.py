"""Credentials: OAuth 2.0 tokens, company API tokens, the OAuth app, token stores, and the single-flight refresh.

Secrets (access and refresh tokens, the client secret) are excluded from every ``repr``; they travel only
in request headers and form bodies, never in exceptions or logs.

Its parts: the token models and the checks on where a token may go (``_tokens``), the token stores
(``_stores``), the OAuth app and its token requests (``_app``), and the :class:`Authorizer` (``_authorizer``).
"""

from ._app import OAuthApp
from ._authorizer import REFRESH_MARGIN, Authorizer
from ._stores import JsonFileTokenStore, MemoryTokenStore, TokenStore
from ._tokens import ApiToken, OAuthToken, require_api_domain, require_secure_url

__all__ = [
    "REFRESH_MARGIN",
    "ApiToken",
    "Authorizer",
    "JsonFileTokenStore",
    "MemoryTokenStore",
    "OAuthApp",
    "OAuthToken",
    "TokenStore",
    "require_api_domain",
    "require_secure_url",
]
